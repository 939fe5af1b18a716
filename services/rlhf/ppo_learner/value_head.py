"""The policy with a critic: a causal LM plus a scalar value per token.

`shared` (default): a linear head on the policy's last hidden state, so one
forward pass yields both the next-token log-probs and the values (half the
compute of a separate critic; the small `vf_coef` keeps the value loss from
dominating the shared trunk). `separate`: the critic is its own copy of the
trunk, initialised from the policy, as in InstructGPT (which initialised it
from the reward model); no interference, twice the compute.

Only the response positions go through the LM head: for a tiny model with a
few thousand tokens of vocabulary the head is a large share of the FLOPs.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

VALUE_HEAD_FILE = "value_head.safetensors"


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding: mask (B, L) -> (B, L), 0 at each row's first real token."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def response_logits(lm: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_len: int) -> torch.Tensor:
    """Logits (B, R, V) that predict the last R tokens of (B, P + R) `input_ids` (left-padded queries)."""
    hidden = lm.base_model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
    ).last_hidden_state  # (B, L, H)
    return lm.get_output_embeddings()(hidden[:, -response_len - 1 : -1])


class PolicyWithValue(nn.Module):
    """`forward` returns response-token logits and values for a (query + response) batch."""

    def __init__(self, policy: PreTrainedModel, value_model: str = "shared") -> None:
        super().__init__()
        if value_model not in ("shared", "separate"):
            raise ValueError(f"value_model must be 'shared' or 'separate', not {value_model!r}")
        self.policy = policy
        self.value_model = value_model
        hidden = policy.get_output_embeddings().weight.shape[1]
        self.critic_trunk = copy.deepcopy(policy.base_model) if value_model == "separate" else None
        self.value_head = nn.Linear(hidden, 1)
        # Zero init: values start at 0 (the expected reward of nothing yet), so
        # the first advantages are the rewards themselves, not head noise.
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_len: int, with_values: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """input_ids, attention_mask: (B, P + R) with the response in the last R columns.

        Returns logits (B, R, V) predicting each response token and values (B, R):
        the value of the state just before each response token is emitted.
        """
        positions = position_ids_from_mask(attention_mask)
        hidden = self.policy.base_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions
        ).last_hidden_state  # (B, L, H)
        # Position t predicts token t+1: the R states before each response token.
        states = hidden[:, -response_len - 1 : -1]  # (B, R, H)
        logits = self.policy.get_output_embeddings()(states)  # (B, R, V)
        if not with_values:
            return logits, None
        if self.critic_trunk is not None:
            critic_hidden = self.critic_trunk(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=positions
            ).last_hidden_state
            states = critic_hidden[:, -response_len - 1 : -1]
        values = self.value_head(states).squeeze(-1)  # (B, R)
        return logits, values

    def critic_state_dict(self) -> dict[str, torch.Tensor]:
        """The value head (and separate trunk): what `save_pretrained` of the policy does not hold."""
        state = {f"value_head.{k}": v for k, v in self.value_head.state_dict().items()}
        if self.critic_trunk is not None:
            state.update({f"critic_trunk.{k}": v for k, v in self.critic_trunk.state_dict().items()})
        return {k: v.detach().contiguous().clone() for k, v in state.items()}

    def load_critic_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.value_head.load_state_dict({k[len("value_head.") :]: v for k, v in state.items() if k.startswith("value_head.")})
        if self.critic_trunk is not None:
            trunk = {k[len("critic_trunk.") :]: v for k, v in state.items() if k.startswith("critic_trunk.")}
            if trunk:
                self.critic_trunk.load_state_dict(trunk)

    def save_critic(self, out_dir: str | Path) -> None:
        save_file(self.critic_state_dict(), str(Path(out_dir) / VALUE_HEAD_FILE))

    def load_critic(self, in_dir: str | Path) -> bool:
        """Load the critic saved beside a policy; False if there is none (a fresh head is kept)."""
        path = Path(in_dir) / VALUE_HEAD_FILE
        if not path.exists():
            return False
        self.load_critic_state_dict(load_file(str(path)))
        return True
