"""Any local HF `AutoModelForSequenceClassification` reward model, single- or multi-head.

Objective names come from `config.id2label` for multi-head models
(ArmoRM/HelpSteer style); a single head takes the configured name. The
conversation and response are rendered with the reward model's own chat
template and scored through the bucketed batch scorer (CUDA graphs on GPU).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from aligner.contract import ChatMessage
from aligner.errors import ModelUnavailable
from aligner.prompting import neutralize_control_tokens, render_chat
from aligner.prompting_guard import check_control_ids
from aligner.rewards.base import BlockingRewardModel, Objective, ScoreItem, split_rows
from kernels.buckets import BucketSpec

DEFAULT_LABEL = re.compile(r"^LABEL_\d+$")


class HFRewardModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Local directory of an AutoModelForSequenceClassification reward model.")
    name: str | None = Field(None, description="Objective name of a single-head model (default: the directory name).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights and activations dtype.")
    device: str = Field("auto", description="'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'.")
    low: float = Field(-5.0, description="Typical lowest raw score; maps to 0 on the unit scale.")
    high: float = Field(5.0, description="Typical highest raw score; maps to 1 on the unit scale.")
    reference: float = Field(0.5, description="Unit-scale reference a response must beat under the `and` combination.")
    max_length: int = Field(
        2048, ge=8, description="Longest conversation+response in tokens; longer ones keep their end."
    )
    cuda_graphs: bool | None = Field(None, description="Replay CUDA graphs per bucket; None means on for CUDA devices.")


def pooled_forward(model, pad_id: int | None, *, left_padding: bool = False):
    """forward(ids, mask, positions) -> scores [B, K] for a sequence-classification model.

    Decoder reward models (a `score` head) are pooled like transformers pools
    them unpadded: at the rightmost token that is not the model's pad id, or at
    the last token when the model config has no pad id (`pad_id` None), but
    only among attended tokens, so batch padding on either side changes nothing.
    Position ids follow the real tokens, which keeps left-padded rows equal to
    unpadded ones. With right padding a causal model's real tokens never see
    the padding after them, so the attention mask is dropped and attention
    takes its fast causal path.
    """
    import torch

    head = getattr(model, "score", None)
    if head is None:
        return lambda ids, mask, positions: model(input_ids=ids, attention_mask=mask).logits
    base = model.base_model

    def forward(ids, mask, positions):
        attention_mask = mask if left_padding else None
        hidden = base(
            input_ids=ids, attention_mask=attention_mask, position_ids=positions, use_cache=False
        ).last_hidden_state
        counted = mask.bool() if pad_id is None else (ids != pad_id) & mask.bool()
        slots = torch.arange(ids.shape[1], device=ids.device)
        last = (slots * counted).argmax(-1)
        return head(hidden[torch.arange(ids.shape[0], device=ids.device), last])

    return forward


class HFRewardModel(BlockingRewardModel):
    def __init__(self, config: HFRewardModelConfig, *, bucket_spec=None):
        # torch and the scorer (which needs torch) load with the first HF reward model, not with
        # `aligner.rewards`, so the CLI and the contract import without them.
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from kernels.scorer import BatchedScorer

        path = Path(config.path).expanduser()
        if not (path / "config.json").is_file():
            raise ModelUnavailable(f"reward model {config.path!r} is not a local HF model directory (no config.json)")
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if not self.tokenizer.chat_template:
            raise ModelUnavailable(f"reward model {path} has no chat template to format the conversation with")
        self.model = (
            AutoModelForSequenceClassification.from_pretrained(path, dtype=getattr(torch, config.dtype))
            .to(device)
            .eval()
        )
        labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        if len(labels) == 1 or all(DEFAULT_LABEL.match(label) for label in labels):
            base_name = config.name or path.name
            labels = [base_name] if len(labels) == 1 else [f"{base_name}.{i}" for i in range(len(labels))]
        self.objectives = tuple(
            Objective(
                label,
                f"Reward head {label!r} of {path.name} (raw range about [{config.low:g}, {config.high:g}]).",
                low=config.low,
                high=config.high,
                reference=config.reference,
            )
            for label in labels
        )
        # The model's own pad id decides its pooling (none: the last token, as transformers does);
        # any id pads a batch, since padding is masked out.
        pooling_pad_id = self.model.config.pad_token_id
        pad_id = pooling_pad_id
        if pad_id is None:
            pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.scorer = BatchedScorer(
            pooled_forward(self.model, pooling_pad_id),
            num_outputs=len(labels),
            pad_id=pad_id,
            device=device,
            spec=bucket_spec or BucketSpec(),
            cuda_graphs=config.cuda_graphs,
        )

    def render(self, conversation: Sequence[ChatMessage], response: str) -> str:
        """The conversation and the response as the reward model reads them: its own chat template.

        A template that refuses the conversation (roles that do not alternate, say) raises
        `InvalidRequest` naming `messages`: the request's conversation is at fault, not the model.
        """
        # Only the reward model's template may produce its control tokens, never the texts in it.
        messages = [
            {"role": m.role, "content": neutralize_control_tokens(m.content, self.tokenizer)} for m in conversation
        ] + [{"role": "assistant", "content": neutralize_control_tokens(response, self.tokenizer)}]
        return render_chat(self.tokenizer, messages, whose=f"the reward model {self.label!r}'s", field="messages")

    def check_conversation(self, conversation: Sequence[ChatMessage]) -> None:
        """Refuse a conversation this model's template refuses, or whose texts bring this model's control
        tokens into its token ids (as its tokenizer reads them, after its normalizer): `InvalidRequest`
        naming `messages[i].content` (or `messages`). The roles decide what a template refuses, not the
        response's text: one empty response stands for all."""
        texts = [(f"messages[{i}].content", m.content) for i, m in enumerate(conversation)]

        def render(stand_ins: dict[str, str]) -> list[int]:
            messages = [
                {"role": m.role, "content": stand_ins.get(field, m.content)}
                for (field, _), m in zip(texts, conversation, strict=True)
            ] + [{"role": "assistant", "content": ""}]
            text = render_chat(self.tokenizer, messages, whose=f"the reward model {self.label!r}'s", field="messages")
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

        check_control_ids(render, texts, self.tokenizer, whose=f"the reward model {self.label!r}'s", whole="messages")

    def token_ids(self, conversation: Sequence[ChatMessage], response: str) -> list[int]:
        ids = self.tokenizer(self.render(conversation, response), add_special_tokens=False)["input_ids"]
        return ids[-self.config.max_length :] or [self.scorer.pad_id]

    @property
    def label(self) -> str:
        return self.config.name or Path(self.config.path).expanduser().name

    def batched_scorers(self):
        return (self.scorer,)

    def score_now(self, conversation: Sequence[ChatMessage], responses: Sequence[str]) -> np.ndarray:
        return self.scorer.score([self.token_ids(conversation, r) for r in responses]).astype(float)

    def score_many(self, items: Sequence[ScoreItem]) -> list[np.ndarray]:
        """All items' sequences go through one scorer call, so they share padded batches (and CUDA graphs)."""
        sequences = [self.token_ids(conversation, r) for conversation, responses in items for r in responses]
        return split_rows(self.scorer.score(sequences).astype(float), items)
