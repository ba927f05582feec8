"""The loop's models in memory, handed from step to step: the starting policy (the reference of
every round), the newest policy and the newest reward model. Each step asks for what it needs
by round; what this process already holds is handed over, and a model is read from its folder
only when it is not held (the first use, or after a restart), once. A stage trains the model it
is handed in place and hands it back (`rlhf.harness.run.Handover`), so round r's policy is
round r-1's object, trained; the older one is gone, never used after that.

Under FSDP with several processes a trained model is sharded in place, and sampling and
evaluation are rank 0's alone: nothing trained is kept then (the next step reads its folder),
and models held are handed to training only as the model it trains (dropped once handed).
"""

from __future__ import annotations

from pathlib import Path

from rlhf.dpo import implicit
from rlhf.harness import distributed as dist
from rlhf.harness.run import Handover
from rlhf.lm.folders import load_model
from rlhf.loop.config import LoopConfig
from rlhf.loop.folder import policy_path, reward_model_path, sft_done, start_path
from rlhf.reward.model import load_reward_model


class Models:
    """Round -> model, for the policy (0: the start) and the reward model; the reference."""

    def __init__(self, cfg: LoopConfig, out: Path, info: dist.DistInfo):
        self.cfg, self.out, self.info = cfg, out, info
        self.keeps = not (info.enabled and cfg.runtime.parallel == "fsdp")
        self.policies: dict = {}  # round (or "sft r") -> (policy, tokenizer)
        self.rewards: dict[int, tuple] = {}  # round -> (reward model, tokenizer)
        self._reference = None
        self._previous: tuple | None = None  # (round, the reference of its DPO policy)

    def reference(self):
        """The starting policy, frozen: every round's KL anchor (loaded once)."""
        if self._reference is None:
            self._reference = load_model(self.cfg.policy)[0].eval().requires_grad_(False)
        return self._reference.to(self.info.device)

    def policy(self, r: int) -> tuple:
        """(policy, tokenizer) after round r (0: the start, a copy apart from the reference)."""
        if r not in self.policies:
            self.policies = {r: load_model(policy_path(self.cfg, self.out, r))}
        model, tok = self.policies[r]
        return model.to(self.info.device), tok

    def start(self, r: int) -> tuple:
        """(policy, tokenizer) that round r's policy step starts from: the round's SFT result
        when it had corrections (`folder.start_path`), else the policy after round r-1."""
        if not sft_done(self.out, r):
            return self.policy(r - 1)
        key = f"sft {r}"
        if key not in self.policies:
            self.policies = {key: load_model(start_path(self.cfg, self.out, r))}
        model, tok = self.policies[key]
        return model.to(self.info.device), tok

    def hand_sft(self, r: int) -> Handover:
        """What round r's supervised step trains: round r-1's policy (it becomes the start of
        the round's policy step)."""
        start = self.policy(r - 1)
        del self.policies[r - 1]
        return Handover(start=(start[0].train(), start[1]))

    def keep_sft(self, r: int, hand: Handover) -> None:
        """Hold the policy round r's supervised step trained (not under FSDP: sharded)."""
        if self.keeps and hand.trained is not None:
            self.policies = {f"sft {r}": hand.trained}

    def reward(self, r: int) -> tuple:
        """(reward model in eval mode, tokenizer) of round r."""
        if r not in self.rewards:
            self.rewards = {r: load_reward_model(reward_model_path(self.out, r))}
        rm, tok = self.rewards[r]
        return rm.to(self.info.device).eval(), tok

    def dpo_reference(self, r: int):
        """The reference of round r's DPO policy: the start, or (dpo_reference: previous) the
        policy of round r-1, read from its folder once (that object was trained into round
        r's)."""
        if self.cfg.dpo_reference == "start":
            return self.reference()
        if self._previous is None or self._previous[0] != r:
            meta = implicit.read_meta(policy_path(self.cfg, self.out, r))
            self._previous = (r, load_model(meta["reference"])[0].eval())
        return self._previous[1].to(self.info.device)

    def hand_policy(self, r: int, reference: str, with_reward: bool = False) -> Handover:
        """What round r's policy step trains: round r-1's policy, or the round's SFT result
        (no longer held as such: it becomes round r's), its reference ('start': the starting
        policy; 'previous': the policy it starts from, DPO's), and (RL) round r's reward
        model. Under FSDP no reference is handed: the trainer shards the one it is handed in
        place, and the loop's evaluation needs the held one whole; the trainer reads its
        own."""
        start = self.start(r)
        self.policies.clear()
        ref = None
        if self.keeps:
            ref = self.reference() if reference == "start" else start[0]
        return Handover(start=start, reference=ref,
                        reward=self.reward(r) if with_reward else None)

    def hand_reward(self, r: int, from_previous: bool) -> Handover:
        """What round r's reward step trains: round r-1's reward model when it continues from
        it, else nothing (a fresh one from the policy, as the config says)."""
        if not from_previous:
            return Handover()
        start = self.reward(r - 1)
        del self.rewards[r - 1]
        return Handover(start=(start[0].train(), start[1]))

    def keep_policy(self, r: int, hand: Handover) -> None:
        """Hold the policy a stage trained as round r's (not under FSDP: it is sharded)."""
        if self.keeps and hand.trained is not None:
            self.policies = {r: (hand.trained[0].eval(), hand.trained[1])}

    def keep_reward(self, r: int, hand: Handover) -> None:
        """Hold the reward model a stage trained as round r's (not under FSDP)."""
        if self.keeps and hand.trained is not None:
            self.rewards = {r: hand.trained}
