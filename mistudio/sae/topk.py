"""TopK SAE (Gao et al. 2024) with the AuxK dead-latent loss, sparse or dense kernels."""

from __future__ import annotations

import torch

from mistudio.sae.base import SparseAutoencoder, TrainOutput, squared_error
from mistudio.sae.sparse import SparseCodes, gather_linear, sparse_decode


class TopKSAE(SparseAutoencoder):
    architecture = "topk"
    uses_dead_mask = True

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        k: int,
        aux_k: int | None = None,
        aux_k_coefficient: float = 1 / 32,
        sparse_kernels: bool = True,
        **kw,
    ):
        super().__init__(d_in, d_sae, **kw)
        self.k = k
        self.aux_k = aux_k if aux_k is not None else max(1, d_in // 2)
        self.aux_k_coefficient = aux_k_coefficient
        self.sparse_kernels = sparse_kernels
        self._workspace: torch.Tensor | None = None  # reused [batch, d_sae] pre-activation buffer

    def __getstate__(self):  # copies and pickles do not carry the workspace
        state = self.__dict__.copy()
        state["_workspace"] = None
        return state

    @torch.no_grad()
    def selection_pre_activations(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Detached x @ W_enc + bias, for picking the active latents.

        On CPU it is written into a buffer kept between steps: a fresh 50 MB tensor per step
        is page-faulted and zeroed by the kernel again (~10 ms on a small CPU).
        """
        bias, W = bias.detach(), self.W_enc.detach()
        if x.device.type != "cpu" or torch.is_autocast_enabled():
            return torch.addmm(bias, x, W)
        shape = (x.shape[0], self.d_sae)
        buf = self._workspace
        if buf is None or buf.shape != shape or buf.dtype != W.dtype:
            buf = self._workspace = torch.empty(shape, dtype=W.dtype)
        return torch.addmm(bias, x, W, out=buf)

    def hparams(self) -> dict:
        return {"k": self.k, "aux_k": self.aux_k, "aux_k_coefficient": self.aux_k_coefficient}

    def saelens_cfg(self) -> dict:
        return {"k": self.k, "rescale_acts_by_decoder_norm": False}  # without k SAELens silently uses 100

    @classmethod
    def hparams_from_saelens(cls, cfg: dict) -> dict:
        return {"k": cfg["k"]}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activations(x)
        values, indices = pre.topk(self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, indices, values.relu())

    def select(self, pre: torch.Tensor) -> SparseCodes:
        """Which latents are active for each row of the detached pre-activations."""
        return SparseCodes.from_topk(pre.topk(self.k, dim=-1, sorted=False).indices, self.d_sae)

    def encode_for_training(self, x: torch.Tensor):
        """(codes, values [P] with grad, pre [B, d_sae], bias): the active latents of a batch.

        Sparse: `pre` is a detached buffer and gradients flow only through the selected
        entries. Dense: plain autograd through the full pre-activation matrix.
        """
        bias = self.encoder_bias()
        if self.sparse_kernels:
            pre = self.selection_pre_activations(x, bias)
            codes = self.select(pre)
            values = gather_linear(x, self.W_enc, bias, pre, codes)
        else:
            pre = torch.addmm(bias, x, self.W_enc)
            codes = self.select(pre.detach())
            values = codes.gather(pre)
        return codes, values, pre, bias

    def decode_codes(self, codes: SparseCodes, values: torch.Tensor) -> torch.Tensor:
        """Reconstruction without b_dec, sparse or dense."""
        if self.sparse_kernels:
            return sparse_decode(values, self.W_dec, codes)
        return codes.to_dense(values) @ self.W_dec

    def training_forward(self, x, *, sparsity_coefficient=0.0, dead_mask=None) -> TrainOutput:
        x = x.to(self.W_enc.dtype)
        codes, values, pre, bias = self.encode_for_training(x)
        values = values.relu()  # fewer than k positive pre-activations: the rest stay off
        recon = self.decode_codes(codes, values) + self.b_dec
        return self._finish(x, recon, codes, values, pre, bias, dead_mask)

    def _finish(self, x, recon, codes, values, pre, bias, dead_mask) -> TrainOutput:
        mse = squared_error(x.to(recon.dtype), recon)
        loss, terms = mse, {"mse_loss": mse.detach()}
        aux = auxk_loss(self, x, pre, bias, x - recon.detach(), dead_mask)
        if aux is not None:
            loss = loss + self.aux_k_coefficient * aux
            terms["aux_loss"] = aux.detach()
        n_active = torch.sign(values.detach()).long()
        fired = torch.zeros(self.d_sae, dtype=torch.long, device=x.device).index_add_(0, codes.cols, n_active)
        return TrainOutput(recon, loss, terms, fired, n_active.sum() / x.shape[0])


def auxk_loss(sae: TopKSAE, x, pre, bias, residual, dead_mask) -> torch.Tensor | None:
    """AuxK: the top aux_k dead latents try to reconstruct what the live ones missed.

    Gives dead latents a gradient so they can come back. Scaled down when fewer latents
    are dead than aux_k (as sparsify does). Returns None when nothing is dead.
    """
    if dead_mask is None:
        return None
    dead = dead_mask.nonzero().squeeze(1)
    n_dead = int(dead.numel())
    if n_dead == 0:
        return None
    k_aux = min(sae.aux_k, n_dead)
    scale = min(n_dead / sae.aux_k, 1.0)
    with torch.no_grad():
        local = pre.detach()[:, dead].topk(k_aux, dim=-1, sorted=False).indices
    codes = SparseCodes.from_topk(dead[local], sae.d_sae)
    if sae.sparse_kernels:
        values = gather_linear(x, sae.W_enc, bias, pre, codes)
    else:
        values = codes.gather(pre)
    return scale * squared_error(residual, sae.decode_codes(codes, values.relu()))
