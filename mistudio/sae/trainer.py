"""The SAE training loop. Fed by any iterator of activation batches; talks only through callbacks.

    trainer = Trainer(config, run_dir, on_progress=print)
    metrics = trainer.train(batches)          # batches: iterator of [batch, d_in] tensors
    trainer = Trainer.resume(run_dir, ...)    # later: continue exactly where it stopped
    trainer.train(batches)                    # a fresh iterator over the same data

After `resume`, the data is put back where the checkpoint left it: an iterator with
`state_dict()`/`load_state_dict()` is asked to seek; a plain one is replayed and the
consumed batches skipped. Calling `train` again on a trainer that was stopped in memory
continues with whatever the iterator yields next.

Callbacks (all optional): `on_progress(metrics)` every `log_every` steps;
`on_checkpoint(path, step)` after each checkpoint; `should_stop()` polled before every
step and before every checkpoint (True: return at once, write nothing more);
`before_commit(step) -> bool` right before a checkpoint is committed (False or an exception:
nothing is committed, `CommitRefused` is raised); `evaluator(reconstruct) -> dict` every
`eval_every` steps, where `reconstruct` maps raw activations to their reconstruction.

A step whose loss is NaN or infinite (lr far too high, inf in the activations) ends training
with `TrainingDiverged` at the next report or checkpoint, before either is written.

Exact resume: weights, Adam state, step, RNG states, the dead-latent window, the input
scale and the data position (the iterator's own `state_dict()` when it has one, else the
number of batches consumed, skipped on resume) are all checkpointed, so on CPU an
interrupted-and-resumed run ends bitwise equal to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from mistudio.errors import InvalidInput, TrainingDiverged
from mistudio.sae.base import SparseAutoencoder
from mistudio.sae.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mistudio.sae.config import TrainingConfig
from mistudio.sae.memory import peak_memory
from mistudio.sae.metrics import FiringWindow, VarianceAccumulator
from mistudio.sae import registry
from mistudio.sae.schedules import lr_at, sparsity_coefficient_at

ProgressFn = Callable[[dict], None]


def build_sae(config, *, device=None, generator=None) -> SparseAutoencoder:
    """An untrained SAE for a config whose d_in / d_sae are known."""
    architecture = registry.get(config.architecture)
    return architecture.load()(config.d_in, config.d_sae, dtype=getattr(torch, config.dtype), device=device,
                               generator=generator, **architecture.sae_kwargs(config))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInput("device", f"{name!r} requested but CUDA is not available here", "use device='auto' or 'cpu'")
    if name == "mps" and not torch.backends.mps.is_available():
        raise InvalidInput("device", "'mps' requested but not available here", "use device='auto' or 'cpu'")
    return torch.device(name)


class Trainer:
    def __init__(
        self,
        config: TrainingConfig,
        run_dir: Path | str | None = None,
        *,
        on_progress: ProgressFn | None = None,
        on_checkpoint: Callable[[Path, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        before_commit: Callable[[int], bool] | None = None,
        evaluator: Callable[[Callable], dict] | None = None,
    ):
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.on_progress, self.on_checkpoint = on_progress, on_checkpoint
        self.should_stop, self.before_commit, self.evaluator = should_stop, before_commit, evaluator
        self.device = resolve_device(config.device)
        self.autocast = config.autocast if config.autocast is not None else self.device.type == "cuda"
        self._sparsity_field = registry.get(config.architecture).sparsity_field  # looked up once, read every step
        self.sae: SparseAutoencoder | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.firing: FiringWindow | None = None
        self.scale = 1.0  # inputs are multiplied by this while training
        self.step = 0
        self.tokens_seen = 0
        self.batches_consumed = 0
        self.finished = False
        self.last_metrics: dict = {}
        self._data_state: Any = None  # restored iterator position, applied in train()
        self._interval = VarianceAccumulator()
        self._interval_loss: dict[str, torch.Tensor] = {}
        self._interval_steps = 0
        # The first step whose loss was NaN/inf (0: none) and that loss, kept on the device so that
        # watching for divergence costs no per-step sync; read before every report and checkpoint.
        self._bad_step: torch.Tensor | None = None
        self._bad_loss: torch.Tensor | None = None
        self._interval_start = time.perf_counter()

    # --- setup -----------------------------------------------------------------------
    def _build(self, d_in: int) -> None:
        self.config = self.config.with_d_in(d_in)
        gen = torch.Generator().manual_seed(self.config.seed)
        self.sae = build_sae(self.config, device=self.device, generator=gen)
        self.optimizer = torch.optim.Adam(
            self.sae.parameters(), lr=self.config.lr, betas=(self.config.adam_beta1, self.config.adam_beta2)
        )
        self.firing = FiringWindow(self.config.d_sae, self.config.dead_window_tokens, device=self.device)

    @torch.no_grad()
    def start(self, first: torch.Tensor) -> None:
        """Fresh run: seed everything, build the SAE, set the input scale and b_dec from `first`.

        `train()` calls it with the first batch; call it yourself to inspect the SAE before training.
        """
        seed = self.config.seed
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        x = first.reshape(-1, first.shape[-1])
        self._build(x.shape[-1])
        # A penalty-trained SAE starts with a small encoder (its recipe's scale, SAELens' decoder
        # norm 0.1 in our unit-norm-decoder form): at full scale about half of the latents fire on
        # every token and the first reconstructions overshoot the input several times over.
        self.sae.W_enc.mul_(self.config.encoder_init_scale)
        x = x.to(self.device, self.sae.W_enc.dtype)
        if self.config.normalize_activations:
            # Mean token norm sqrt(d_in) (SAELens' "expected_average_only_in"): makes lr and
            # L1/L0 coefficients transferable across models and layers.
            mean_norm = float(x.norm(dim=-1).mean())
            self.scale = math.sqrt(x.shape[-1]) / mean_norm if mean_norm > 0 else 1.0
        self.sae.init_b_dec(x * self.scale)

    @classmethod
    def resume(cls, run_dir: Path | str, checkpoint: Path | str | None = None, **callbacks) -> "Trainer":
        """A trainer restored from `checkpoint` (default: the latest one in run_dir)."""
        path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
        if path is None:
            raise InvalidInput("run_dir", f"no checkpoint under {run_dir}", "start a new run with Trainer(config, run_dir)")
        config_json, weights, state = load_checkpoint(path)
        trainer = cls(TrainingConfig.model_validate(config_json), run_dir, **callbacks)
        trainer._build(trainer.config.d_in)
        trainer.sae.load_state_dict(weights)
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.firing.load_state_dict(state["firing"])
        trainer.scale = float(state["scale"])
        trainer.step, trainer.tokens_seen = int(state["step"]), int(state["tokens_seen"])
        trainer.batches_consumed = int(state["batches_consumed"])
        trainer.finished = bool(state["finished"])
        trainer.last_metrics = dict(state.get("metrics") or {})
        trainer._data_state = state["data"]
        _set_rng_state(state["rng"])
        return trainer

    def saved_stream_state(self) -> dict | None:
        """Where the data stream was at the checkpoint this trainer resumed from (its state_dict();
        None for a fresh trainer or a plain iterator): a caller that owns the stream seeks it there."""
        data = self._data_state
        return data.get("iterator") if data is not None and not self.finished else None

    # --- the loop --------------------------------------------------------------------
    def train(self, activations: Iterable[torch.Tensor]) -> dict:
        """Train until `steps`, the data runs out, or should_stop(). Returns the last metrics."""
        cfg = self.config
        stateful = hasattr(activations, "state_dict") and hasattr(activations, "load_state_dict")
        saved, self._data_state = self._data_state, None
        if saved is not None and not self.finished and stateful and saved.get("iterator") is not None:
            activations.load_state_dict(saved["iterator"])  # resumed: the iterator seeks itself
            iterator = iter(activations)
        else:
            iterator = iter(activations)
            if saved is not None and not self.finished:
                for _ in range(self.batches_consumed):  # resumed, plain iterator: replay to the position
                    next(iterator)
        pending = None
        if self.sae is None:
            pending = next(iterator, None)
            if pending is None:
                raise InvalidInput("activations", "the activation iterator is empty", "give at least one batch")
            self.start(pending)
        stopped = False
        start_step = self.step
        data = activations if stateful else None
        self._interval_start = time.perf_counter()
        while not self.finished and self.step < cfg.steps:
            if self._stop_requested():
                stopped = True
                break
            x = pending if pending is not None else next(iterator, None)
            pending = None
            if x is None:
                self.finished = True  # data exhausted: finish early, honestly reported
                break
            self.train_batch(x)
            if self.checkpoint_due():
                if self._stop_requested():
                    stopped = True
                    break
                self.checkpoint(data)
        if not stopped:
            stopped = not self.finish(data, checkpoint=self.step > start_step)
        result = dict(self.last_metrics)
        result["stopped"] = stopped
        return result

    # One batch at a time, for a caller that owns the data stream (sae/multi.py feeds several
    # trainers from one stream); train() is these steps in a loop.
    def train_batch(self, x: torch.Tensor) -> None:
        """One optimiser step on batch x, then the progress report (and evaluation) when due."""
        cfg = self.config
        self._train_step(x)
        last = self.step == cfg.steps
        due_log = self.step % cfg.log_every == 0 or last
        due_eval = self.evaluator is not None and cfg.eval_every > 0 and (self.step % cfg.eval_every == 0 or last)
        if due_log or due_eval:
            self._report(evaluate=due_eval)

    def checkpoint_due(self) -> bool:
        """Whether the step just taken is a periodic checkpoint's (the final one is finish()'s)."""
        return self.step % self.config.checkpoint_every == 0 and self.step < self.config.steps

    def checkpoint(self, data=None) -> Path | None:
        """Write a checkpoint now; `data` is the stream whose state_dict() lets a resume seek."""
        return self._checkpoint(data)

    def finish(self, data=None, *, checkpoint: bool = True) -> bool:
        """End training: report a partial interval, then the final checkpoint (when `checkpoint`).
        False when a stop was requested before that checkpoint (nothing written)."""
        exhausted = self.finished and self.step < self.config.steps
        self.finished = True
        if self._interval_steps:  # data ran out mid-interval
            self._report(evaluate=self.evaluator is not None and self.config.eval_every > 0)
        self.last_metrics["data_exhausted"] = exhausted
        if checkpoint and self.run_dir is not None:
            if self._stop_requested():  # even the final checkpoint is not written after a stop
                return False
            self._checkpoint(data)
        return True

    def _train_step(self, x: torch.Tensor) -> None:
        cfg, sae = self.config, self.sae
        x = x.reshape(-1, x.shape[-1]).to(self.device, sae.W_enc.dtype, non_blocking=True)
        if self.scale != 1.0:
            x = x * self.scale
        lr = lr_at(self.step, lr=cfg.lr, total_steps=cfg.steps, warmup_steps=cfg.lr_warmup_steps,
                   decay_steps=cfg.lr_decay_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        coefficient = sparsity_coefficient_at(self.step, coefficient=self._target_coefficient(),
                                              warmup_steps=cfg.sparsity_warmup_steps)
        dead = self.firing.dead_mask() if sae.uses_dead_mask else None
        with self._autocast():
            out = sae.training_forward(x, sparsity_coefficient=coefficient, dead_mask=dead)
        self._watch_loss(out.loss.detach())
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        sae.remove_parallel_decoder_grad()
        self.optimizer.step()
        sae.after_step()
        n = x.shape[0]
        self.firing.update(out.fired, n)
        self._interval.add(x, out.recon.detach(), out.l0)
        for name, value in {"loss": out.loss.detach(), **out.terms}.items():
            self._interval_loss[name] = self._interval_loss.get(name, 0.0) + value.float()
        self._interval_steps += 1
        self._last = {"lr": lr, "sparsity_coefficient": coefficient, **out.extra}
        self.step += 1
        self.tokens_seen += n
        self.batches_consumed += 1

    def _watch_loss(self, loss: torch.Tensor) -> None:
        if self._bad_step is None:
            self._bad_step = torch.zeros((), dtype=torch.long, device=loss.device)
            self._bad_loss = torch.zeros((), dtype=loss.dtype, device=loss.device)
        first = ~torch.isfinite(loss) & (self._bad_step == 0)
        self._bad_step = torch.where(first, self.step + 1, self._bad_step)
        self._bad_loss = torch.where(first, loss, self._bad_loss)

    def _check_finite(self) -> None:
        """Raise TrainingDiverged if a step's loss was NaN/inf: never report or checkpoint a broken SAE."""
        if self._bad_step is not None and int(self._bad_step):
            loss = float(self._bad_loss)
            raise TrainingDiverged(int(self._bad_step), "NaN" if math.isnan(loss) else "infinite", self.config.lr)

    def _target_coefficient(self) -> float:
        """The sparsity penalty's weight after warmup: the architecture's coefficient field, if it has one."""
        name = self._sparsity_field
        return getattr(self.config, name) if name is not None else 0.0

    def _autocast(self):
        if self.autocast and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _stop_requested(self) -> bool:
        return bool(self.should_stop is not None and self.should_stop())

    # --- reporting -------------------------------------------------------------------
    def _report(self, evaluate: bool) -> None:
        self._check_finite()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # honest tokens/s
        now = time.perf_counter()
        elapsed = now - self._interval_start
        metrics = {name: float(total) / self._interval_steps for name, total in self._interval_loss.items()}
        metrics.update(self._interval.summary(scale=self.scale))
        metrics.update(self.firing.summary())
        metrics.update({name: float(value) for name, value in self._last.items()})
        metrics.update(
            step=self.step,
            total_steps=self.config.steps,
            tokens_seen=self.tokens_seen,
            tokens_per_s=self._interval.tokens / elapsed if elapsed > 0 else float("nan"),
        )
        metrics.update(peak_memory(self.device))  # peak RSS (and CUDA's peak allocation) of the process
        if evaluate and self.evaluator is not None:
            metrics.update(self.evaluator(self.reconstruct))
        self.last_metrics = metrics
        self._interval.reset()
        self._interval_loss, self._interval_steps = {}, 0
        if self.on_progress is not None:
            self.on_progress(dict(metrics))
        self._interval_start = time.perf_counter()  # callback time is not training time

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of raw (unscaled) activations, in their own units and dtype."""
        was_training = self.sae.training
        self.sae.eval()
        try:
            flat = x.reshape(-1, x.shape[-1]).to(self.device, self.sae.W_enc.dtype)
            out = self.sae(flat * self.scale) / self.scale
        finally:
            self.sae.train(was_training)
        return out.reshape(x.shape).to(x.device, x.dtype)

    def inference_sae(self) -> SparseAutoencoder:
        """A copy of the SAE that works on raw activations (input scale folded in), in eval mode."""
        sae = copy.deepcopy(self.sae).eval()
        sae.fold_input_scale(self.scale)
        return sae

    # --- checkpoints -----------------------------------------------------------------
    def state_dict(self, activations=None) -> dict:
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "batches_consumed": self.batches_consumed,
            "finished": self.finished,
            "scale": self.scale,
            "optimizer": self.optimizer.state_dict(),
            "firing": self.firing.state_dict(),
            "rng": _get_rng_state(),
            "data": {
                "batches_consumed": self.batches_consumed,
                "iterator": activations.state_dict() if activations is not None else None,
            },
            "metrics": self.last_metrics,
        }

    def _checkpoint(self, activations=None) -> Path | None:
        self._check_finite()
        if self.run_dir is None:
            return None
        path = save_checkpoint(
            self.run_dir,
            self.step,
            self.sae.state_dict(),
            self.config.model_dump(mode="json"),
            self.state_dict(activations),
            keep=self.config.keep_checkpoints,
            before_commit=self.before_commit,
        )
        if self.on_checkpoint is not None:
            self.on_checkpoint(path, self.step)
        return path


def _get_rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain, np_state[2:])],
    }


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
