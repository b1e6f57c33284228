"""`protocol.count_frames`: the whole frames in a buffer, and what is left of the next one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from charter.server import protocol as p


@given(
    bodies=st.lists(st.binary(max_size=40), max_size=8), tail=st.binary(max_size=60), cut=st.integers(0, 100)
)
def test_counts_whole_frames_and_keeps_the_rest(bodies: list[bytes], tail: bytes, cut: int) -> None:
    whole = b"".join(p.HEADER.pack(len(b)) + b for b in bodies)
    partial = (p.HEADER.pack(len(tail)) + tail)[: cut % (len(tail) + 4)]  # never a whole frame
    n, rest = p.count_frames(whole + partial)
    assert n == len(bodies)
    assert rest == partial
