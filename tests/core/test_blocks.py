"""Prompt block hashes (``_core.blocks``, prefix routing): the compiled function against its
pure-Python reference on random prompts and block sizes, and the property prefix routing
rests on -- hash k names exactly the first k + 1 whole blocks."""
from __future__ import annotations

import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastinfer._core import blocks as compiled
from fastinfer._core.ref import blocks as reference

BLOCK_SIZES = st.sampled_from([8, 16, 64, 256, 1024])


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=5000), block=BLOCK_SIZES)
def test_compiled_and_reference_agree(data, block):
    assert compiled.chain_hashes(data, block) == reference.chain_hashes(data, block)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=3000), more=st.binary(max_size=3000), block=BLOCK_SIZES)
def test_a_longer_prompt_keeps_the_hashes_of_its_whole_blocks(data, more, block):
    short = compiled.chain_hashes(data, block)
    long = compiled.chain_hashes(data + more, block)
    assert len(short) == len(data) // block * 8
    assert long[:len(short)] == short


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=512, max_size=2048), at=st.integers(0, 511), flip=st.integers(1, 255))
def test_a_changed_byte_changes_its_block_and_every_later_hash(data, at, flip):
    changed = bytearray(data)
    changed[at] ^= flip
    a = array.array("Q", compiled.chain_hashes(data, 64))
    b = array.array("Q", compiled.chain_hashes(bytes(changed), 64))
    first = at // 64
    assert a[:first] == b[:first]
    assert all(x != y for x, y in zip(a[first:], b[first:]))
    assert 0 not in a                                   # 0 is never a hash (the index's empty value)


@pytest.mark.parametrize("impl", [compiled, reference])
def test_block_sizes_are_whole_words(impl):
    for bad in (0, -8, 12):
        with pytest.raises(ValueError):
            impl.chain_hashes(b"x" * 64, bad)
    with pytest.raises(TypeError):
        impl.chain_hashes("text", 8)
