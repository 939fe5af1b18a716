"""The policy with a critic: a causal LM plus a scalar value per token.

`detached` (default): a linear head on the policy's last hidden state, so one
forward pass yields both the next-token log-probs and the values, with the
value loss stopping at the head: the policy's trunk learns from the policy
loss alone (a separate critic's isolation at a shared critic's cost; the head
fits the policy's features as they are). `shared`: the same head, with the
value loss (scaled by the small `vf_coef`) also training the trunk; at the
bench shape that scored 0.04-0.07 lower (docs/ppo.md). `separate`: the critic
is its own copy of the trunk, initialised from the policy, as in InstructGPT
(which initialised it from the reward model); no interference, twice the compute.

Only the response positions go through the LM head: for a tiny model with a
few thousand tokens of vocabulary the head is a large share of the FLOPs.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import DynamicCache, PreTrainedModel

VALUE_HEAD_FILE = "value_head.safetensors"
VALUE_MODELS = ("shared", "detached", "separate")


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding: mask (B, L) -> (B, L), 0 at each row's first real token."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def response_states(
    base: nn.Module,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    group_size: int = 1,
) -> torch.Tensor:
    """Hidden states (B, R, H) from which each of the R response tokens is predicted.

    query_ids/query_mask: (B / group_size, P), left-padded, one row per distinct
    prompt; response_ids/response_mask: (B, R), right-padded, `group_size`
    consecutive rows per prompt. With groups, each prompt is encoded once and
    its keys/values are repeated for its k answers (with gradients: the repeat
    is part of the graph), so k samples of a prompt cost one prompt's compute
    instead of k. Exact, not an approximation.
    """
    if group_size == 1:
        ids = torch.cat([query_ids, response_ids], dim=1)  # (B, P + R)
        mask = torch.cat([query_mask, response_mask.long()], dim=1)
        hidden = base(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).last_hidden_state
        return hidden[:, query_ids.shape[1] - 1 : -1]  # (B, R, H)
    R = response_ids.shape[1]
    cache = DynamicCache(config=base.config)
    q_pos = position_ids_from_mask(query_mask)
    h_query = base(input_ids=query_ids, attention_mask=query_mask, position_ids=q_pos, cache=cache,
                   use_cache=True).last_hidden_state  # (G, P, H)
    cache.batch_repeat_interleave(group_size)
    mask = torch.cat([query_mask.repeat_interleave(group_size, 0), response_mask.long()], dim=1)  # (B, P + R)
    r_pos = q_pos[:, -1:].repeat_interleave(group_size, 0) + 1 + torch.arange(R, device=q_pos.device)  # (B, R)
    h_resp = base(input_ids=response_ids, attention_mask=mask, position_ids=r_pos, cache=cache,
                  use_cache=True).last_hidden_state  # (B, R, H)
    last_query = h_query[:, -1:].repeat_interleave(group_size, 0)  # (B, 1, H): predicts the first answer token
    return torch.cat([last_query, h_resp[:, :-1]], dim=1)  # (B, R, H)


def response_logits(
    lm: PreTrainedModel,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    group_size: int = 1,
) -> torch.Tensor:
    """Logits (B, R, V) predicting each response token (see `response_states` for the shapes)."""
    states = response_states(lm.base_model, query_ids, query_mask, response_ids, response_mask, group_size)
    return lm.get_output_embeddings()(states)


class PolicyWithValue(nn.Module):
    """`forward` returns response-token logits and values for a batch of prompts and answers."""

    def __init__(self, policy: PreTrainedModel, value_model: str = "detached") -> None:
        super().__init__()
        if value_model not in VALUE_MODELS:
            raise ValueError(f"value_model must be one of {', '.join(VALUE_MODELS)}, not {value_model!r}")
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
        self,
        query_ids: torch.Tensor,
        query_mask: torch.Tensor,
        response_ids: torch.Tensor,
        response_mask: torch.Tensor,
        group_size: int = 1,
        with_values: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, R, V) predicting each response token and values (B, R): the value of the
        state just before each response token is emitted (shapes as in `response_states`)."""
        args = (query_ids, query_mask, response_ids, response_mask, group_size)
        states = response_states(self.policy.base_model, *args)  # (B, R, H)
        logits = self.policy.get_output_embeddings()(states)  # (B, R, V)
        if not with_values:
            return logits, None
        if self.critic_trunk is not None:
            states = response_states(self.critic_trunk, *args)
        return logits, self.values(states)

    def values(self, states: torch.Tensor) -> torch.Tensor:
        """Values (B, R) from the critic's states (B, R, H); a `detached` head passes no gradient back."""
        if self.value_model == "detached":
            states = states.detach()
        return self.value_head(states).squeeze(-1)

    def critic_parameters(self) -> list[nn.Parameter]:
        """What only the value loss trains: the head, and the separate trunk if there is one."""
        trunk = list(self.critic_trunk.parameters()) if self.critic_trunk is not None else []
        return trunk + list(self.value_head.parameters())  # the order of `parameters()`

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
