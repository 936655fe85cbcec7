"""Resampler speed and quality: core/data/resample.py (libsoxr) against another implementation.

    git show 97920e8:sentryfuse_ros/core/data/resample.py > /tmp/old_resample.py   # the numpy sinc
    python scripts/bench_resample.py --old /tmp/old_resample.py

Quality on a 1 kHz tone (SNR against the exact sine, 100 ms trimmed at each end) and aliasing of a
7 kHz tone downsampled to 8 kHz (its residual RMS, dB under the input: 7 kHz is above the new 4 kHz
Nyquist, so all of it is alias). Timing: median of interleaved repeats at 1 torch/numpy thread.
"""
import argparse
import importlib.util
import math
import time

import numpy as np

from sentryfuse_ros.core.data.resample import resample as new_resample


def load(path):
    spec = importlib.util.spec_from_file_location('old_resample', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.resample


def tone(freq, rate, seconds):
    return np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate).astype(np.float32)


def snr_db(fn, src, dst, freq=1000.0):
    out = fn(tone(freq, src, 1.0), src, dst)
    exact = np.sin(2 * np.pi * freq * np.arange(out.size) / dst)
    trim = slice(dst // 10, -dst // 10)
    err = out[trim] - exact[trim]
    return 10 * math.log10(np.mean(exact[trim] ** 2) / max(np.mean(err ** 2), 1e-30))


def alias_db(fn, src=48000, dst=8000, freq=7000.0):
    out = fn(tone(freq, src, 1.0), src, dst)[dst // 10:-dst // 10]
    return 10 * math.log10(max(np.mean(out ** 2), 1e-30) / 0.5)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--old', required=True, help='path of the other resample.py')
    parser.add_argument('--repeats', type=int, default=15)
    args = parser.parse_args()
    impls = {'old': load(args.old), 'soxr': new_resample}
    cases = {'1 s 48->16 kHz': (tone(440, 48000, 1.0), 48000, 16000),
             '20 ms 48->8 kHz': (tone(440, 48000, 0.02), 48000, 8000),
             '20 ms 44.1->8 kHz': (tone(440, 44100, 0.02), 44100, 8000)}
    times = {(c, n): [] for c in cases for n in impls}
    for _ in range(args.repeats):
        for c, (pcm, src, dst) in cases.items():
            for n, fn in impls.items():   # interleaved
                t0 = time.perf_counter()
                fn(pcm, src, dst)
                times[c, n].append((time.perf_counter() - t0) * 1e3)
    print('| case | old [ms] | soxr [ms] | old / soxr |\n|---|---|---|---|')
    for c in cases:
        old, new = np.median(times[c, 'old']), np.median(times[c, 'soxr'])
        print(f'| {c} | {old:.3f} | {new:.3f} | {old / new:.0f}x |')
    print('\n| quality | old | soxr |\n|---|---|---|')
    for src, dst in ((48000, 16000), (44100, 16000), (8000, 16000)):
        print(f'| SNR 1 kHz tone {src}->{dst} [dB] | {snr_db(impls["old"], src, dst):.1f} | '
              f'{snr_db(impls["soxr"], src, dst):.1f} |')
    print(f'| alias of 7 kHz at 48->8 kHz [dB] | {alias_db(impls["old"]):.1f} | {alias_db(impls["soxr"]):.1f} |')


if __name__ == '__main__':
    main()
