"""What a bag declares against ReadLimits and its storage files (core/bags/sizes.py)."""
import pathlib

import pytest
import yaml

from sentryfuse_ros.core.bags.reader import BagSource
from sentryfuse_ros.core.bags.sizes import bounded_zstd
from sentryfuse_ros.core.errors import BagError
from sentryfuse_ros.core.limits import ReadLimits
from replay_fixtures import sim_bag


def _claim(bag: pathlib.Path, **info) -> None:
    path = bag / 'metadata.yaml'
    doc = yaml.safe_load(path.read_text())
    doc['rosbag2_bagfile_information'].update(info)
    path.write_text(yaml.safe_dump(doc))


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_a_duration_the_storage_files_do_not_hold_is_refused(tmp_path, storage):
    bag = sim_bag(tmp_path / 'b', duration=1.0, storage=storage)
    with BagSource(bag) as src:
        assert src.message_count > 0
    _claim(bag, duration={'nanoseconds': 1000 * 10**9})  # within the limit, but not what the files hold
    with pytest.raises(BagError, match=r"metadata.yaml declares end \(start \+ duration\) \d+ ns but its storage "
                                       r'files hold \d+ ns: expected them to agree within 1 s'):
        BagSource(bag).open()


def test_declared_sizes_above_the_limits_are_refused_before_opening(tmp_path):
    bag = sim_bag(tmp_path / 'b', duration=1.0)
    _claim(bag, message_count=10**12)
    with pytest.raises(BagError, match=r'declares message_count 1000000000000: expected an integer in \[0, 100000000\]'):
        BagSource(bag)
    _claim(bag, message_count='many')
    with pytest.raises(BagError, match=r"declares message_count 'many'"):
        BagSource(bag)
    _claim(bag, message_count=86, duration={'nanoseconds': 3 * 10**9})
    with pytest.raises(BagError, match=r'declares duration \[ns\] 3000000000: expected an integer in \[0, 2000000000\]'):
        BagSource(bag, limits=ReadLimits(max_bag_duration_s=2.0))


def test_zstd_payloads_expand_only_to_the_limit():
    from backports import zstd
    small = zstd.compress(b'\0' * 1000)
    assert bounded_zstd(1000)(small) == b'\0' * 1000
    with pytest.raises(BagError, match=r'declares 1000 bytes: expected at most 999'):
        bounded_zstd(999)(small)
