"""Chat templates that refuse conversations, as many real ones do (Llama 2, Mistral, Gemma): for the tests
that a refused conversation is the request's 400 and fails no other request.

`ALTERNATING_ROLES` renders ChatML (SmolLM2's format, so the embedded model's tokens fit) but, like
Mistral's template, raises unless the roles after an optional system message alternate user/assistant,
starting with the user.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REFUSAL = "Conversation roles must alternate user/assistant/user/assistant/..."

ALTERNATING_ROLES = (
    "{%- if messages[0]['role'] == 'system' %}{%- set turns = messages[1:] %}{%- else %}"
    "{%- set turns = messages %}{%- endif %}"
    "{%- for message in turns %}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('" + REFUSAL + "') }}{%- endif %}{%- endfor %}"
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


def with_chat_template(source: Path, template: str, directory: Path, *, tokenizer_only: bool = False) -> Path:
    """A copy of the HF directory `source` in `directory` whose tokenizer has `template` as its chat template
    (with `tokenizer_only`, the tokenizer files alone: what `aligner.engine.vllm.Engine` renders prompts
    with, while the engine keeps its weights). Returns `directory`."""
    from transformers import AutoTokenizer

    if not tokenizer_only:
        shutil.copytree(source, directory, dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(directory)
    return directory
