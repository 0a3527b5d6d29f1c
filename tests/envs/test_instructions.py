import numpy as np

from embodied_rl.envs.instructions import (
    MAX_INSTRUCTION_TOKENS,
    PAD_ID,
    UNK_ID,
    decode_instruction,
    encode_instruction,
)


def test_encode_decode_round_trip():
    text = "stack the red block on the blue cylinder"
    ids = encode_instruction(text)
    assert ids.shape == (MAX_INSTRUCTION_TOKENS,) and ids.dtype == np.int64
    assert decode_instruction(ids) == text
    assert (ids[len(text.split()) :] == PAD_ID).all()


def test_unknown_words_and_truncation():
    ids = encode_instruction("juggle the red block", max_tokens=3)
    assert ids[0] == UNK_ID and len(ids) == 3
    assert decode_instruction(ids) == "<unk> the red"
