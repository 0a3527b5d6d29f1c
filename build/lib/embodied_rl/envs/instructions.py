"""Natural-language instructions: templates, paraphrases and a fixed word vocabulary.

All language the environments produce lives here, so the vocabulary used for the
numpy ``instruction_mode="tokens"`` encoding is closed and deterministic.
"""

from __future__ import annotations

import re
import string

import numpy as np

# Characters an instruction may contain (the gymnasium Text space's charset).
CHARSET = string.ascii_letters + string.digits + " .,'-"
MAX_INSTRUCTION_CHARS = 160
MAX_INSTRUCTION_TOKENS = 24
PAD_ID, UNK_ID = 0, 1

DIRECTION_WORDS: dict[str, str] = {
    "left": "left",
    "right": "right",
    "front": "front",
    "back": "back",
}

# Templates per task family. Fields: {obj}, {target}, {direction}, {fixture}.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "reach": (
        "reach the {obj}",
        "move your gripper to the {obj}",
        "touch the {obj}",
        "go to the {obj}",
        "put the gripper on the {obj}",
    ),
    "push": (
        "push the {obj} to the {direction}",
        "slide the {obj} to the {direction}",
        "nudge the {obj} toward the {direction}",
        "move the {obj} to the {direction} by pushing it",
        "shove the {obj} to the {direction} side",
    ),
    "push_next_to": (
        "push the {obj} next to the {target}",
        "slide the {obj} close to the {target}",
        "move the {obj} beside the {target} without lifting it",
        "push the {obj} toward the {target} until they touch",
    ),
    "pick": (
        "pick up the {obj}",
        "lift the {obj}",
        "grasp the {obj} and raise it",
        "take the {obj} off the table",
        "hold the {obj} up in the air",
    ),
    "place": (
        "put the {obj} {fixture}",
        "place the {obj} {fixture}",
        "move the {obj} {fixture}",
        "pick up the {obj} and drop it {fixture}",
    ),
    "stack": (
        "stack the {obj} on the {target}",
        "put the {obj} on top of the {target}",
        "place the {obj} onto the {target}",
        "build a tower with the {obj} on the {target}",
    ),
}

FIXTURE_PHRASES: dict[str, str] = {"bowl": "in the bowl", "plate": "on the plate"}

# One instruction per Meta-World v3 task, written from the task's success condition.
METAWORLD_INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "put the ring on the peg",
    "basketball-v3": "dunk the ball into the basket",
    "bin-picking-v3": "move the puck from one bin into the other bin",
    "box-close-v3": "put the lid on the box",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "press the button from the top behind the wall",
    "button-press-v3": "press the button",
    "button-press-wall-v3": "press the button behind the wall",
    "coffee-button-v3": "push the button on the coffee machine",
    "coffee-pull-v3": "pull the mug away from the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial",
    "disassemble-v3": "take the ring off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door by turning the lock",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door by turning the lock",
    "hand-insert-v3": "insert the gripper into the hole",
    "drawer-close-v3": "push the drawer closed",
    "drawer-open-v3": "pull the drawer open",
    "faucet-open-v3": "turn the faucet on",
    "faucet-close-v3": "turn the faucet off",
    "hammer-v3": "hammer the nail into the wall",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "pick-out-of-hole-v3": "pick the peg out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "plate-slide-v3": "slide the plate into the cabinet",
    "plate-slide-side-v3": "slide the plate sideways into the cabinet",
    "plate-slide-back-v3": "slide the plate out of the cabinet",
    "plate-slide-back-side-v3": "slide the plate sideways out of the cabinet",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "unplug the peg from the side",
    "soccer-v3": "kick the ball into the goal",
    "stick-push-v3": "grasp the stick and push the box with it",
    "stick-pull-v3": "grasp the stick and pull the box with it",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck to the goal behind the wall",
    "push-back-v3": "push the puck backward to the goal",
    "reach-v3": "reach the goal position",
    "reach-wall-v3": "reach the goal position behind the wall",
    "shelf-place-v3": "place the puck on the shelf",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
}

_WORD = re.compile(r"[a-z0-9']+")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens of an instruction (punctuation dropped)."""
    return _WORD.findall(text.lower())


def _build_vocabulary() -> tuple[str, ...]:
    from embodied_rl.envs.tabletop.scene import COLORS, SHAPES

    words: set[str] = set()
    fills = [*COLORS, *SHAPES, *DIRECTION_WORDS.values(), *FIXTURE_PHRASES.values(), "object"]
    for text in [*fills, *METAWORLD_INSTRUCTIONS.values()]:
        words.update(tokenize(text))
    for templates in TEMPLATES.values():
        for template in templates:
            words.update(tokenize(re.sub(r"\{\w+\}", " ", template)))
    return ("<pad>", "<unk>", *sorted(words))


VOCABULARY: tuple[str, ...] = _build_vocabulary()
_WORD_TO_ID = {word: i for i, word in enumerate(VOCABULARY)}


def encode_instruction(text: str, max_tokens: int = MAX_INSTRUCTION_TOKENS) -> np.ndarray:
    """Encode ``text`` as int64 word ids padded with ``PAD_ID`` to ``(max_tokens,)``.

    Unknown words map to ``UNK_ID``; longer instructions are cut at ``max_tokens``.
    """
    ids = [_WORD_TO_ID.get(word, UNK_ID) for word in tokenize(text)][:max_tokens]
    out = np.full(max_tokens, PAD_ID, dtype=np.int64)
    out[: len(ids)] = ids
    return out


def instruction_space(mode: str):
    """The observation space of the instruction for ``instruction_mode``; None for ``"none"``."""
    from gymnasium import spaces

    if mode == "text":
        return spaces.Text(max_length=MAX_INSTRUCTION_CHARS, min_length=1, charset=CHARSET)
    if mode == "tokens":
        return spaces.Box(0, len(VOCABULARY) - 1, shape=(MAX_INSTRUCTION_TOKENS,), dtype=np.int64)
    return None


def decode_instruction(ids: np.ndarray) -> str:
    """Inverse of :func:`encode_instruction` up to case and punctuation."""
    return " ".join(VOCABULARY[int(i)] for i in ids if int(i) != PAD_ID)
