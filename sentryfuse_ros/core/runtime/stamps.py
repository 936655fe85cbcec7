"""Message stamps against the receiver's clock, and clock jumps back: ROS-free rules the nodes call.

A stamp far from the receiver's clock (a sensor whose clock is not synchronised, a corrupt header,
``sec = 2**31 - 1``) is an error with its cause: counted, the message dropped, never obeyed, never
kept as "the newest time seen". A clock that steps back (``use_sim_time`` and a /clock that
restarts, a bag replayed again) makes every time kept from before the step lie in the future:
what depends on time is reset (the input buffers' samples, the health view), as rclpy's jump
callbacks and tf2's buffer do. :class:`ClockWatch` notices a step back from the times it is given,
so the offline replay and a node whose jump callback did not fire are covered too.
"""
import math

from sentryfuse_ros.core.errors import StampError

MAX_STAMP_OFFSET_S = 60.0  # default: a stamp further than this from the receiver's clock is refused [s]
JUMP_BACK_S = 1.0          # default: the clock stepping back by more than this resets time-dependent state [s]


def check_stamp(stamp_s: float, now_s: float, what: str, max_offset_s: float = MAX_STAMP_OFFSET_S) -> float:
    """``stamp_s`` when it is finite and within ``max_offset_s`` of ``now_s``; StampError naming it otherwise.

    Args:
        stamp_s: the message's header stamp [s].
        now_s: the receiver's clock when it arrived [s].
        what: names the message in the error (e.g. 'audio', 'health').
        max_offset_s: the largest accepted |stamp - now| [s]; inf accepts every finite stamp.
    """
    if not math.isfinite(stamp_s):
        raise StampError(f'{what} stamp {stamp_s!r}: expected a finite time [s]')
    offset = stamp_s - now_s
    if abs(offset) > max_offset_s:
        side = 'ahead of' if offset > 0 else 'behind'
        raise StampError(f'{what} stamp {stamp_s:.3f} s is {abs(offset):.3f} s {side} the receiving clock '
                         f'({now_s:.3f} s): expected within {max_offset_s:g} s (is the sensor\'s clock '
                         'synchronised? a corrupt header?); message dropped')
    return stamp_s


class ClockWatch:
    """Notices the clock stepping back between the times it is shown.

    Args:
        jump_back_s: a step back larger than this counts as a jump [s].
    """

    def __init__(self, jump_back_s: float = JUMP_BACK_S):
        self.jump_back_s = float(jump_back_s)
        self.latest = -math.inf  # newest time seen since the last jump
        self.jumps = 0

    def jumped_back(self, now_s: float) -> bool:
        """True (and the watch restarted at ``now_s``) when ``now_s`` is more than ``jump_back_s`` before
        the newest time seen."""
        if now_s < self.latest - self.jump_back_s:
            self.latest = now_s
            self.jumps += 1
            return True
        self.latest = max(self.latest, now_s)
        return False

    def reset(self) -> None:
        self.latest = -math.inf
