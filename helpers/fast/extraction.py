"""Speed code: image and text features for many inputs at once, as fast as the machine allows.

The blog extracts one input at a time. The course's pipeline batches, runs the CNN on CPU as one
fused oneDNN Graph (on CUDA: pinned memory, non-blocking copies, float16 autocast), skips autograd
(inference_mode), sorts captions by length so a batch carries little padding, and stores float16.
What the encoders compute is `encoders.ImageEncoder.forward` and `encoders.TextEncoder.forward`:
`graph_copy` and `inference_copy` give the same outputs up to float32 rounding (tested), faster.
`python -m helpers bench extract` times this pipeline against the blog's loop on the same inputs.
"""
from __future__ import annotations

import os
import warnings

import torch
from torch.fx.experimental.optimization import fuse
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..config import course_device, get_device
from ..encoders import ImageEncoder


def inference_copy(encoder: ImageEncoder) -> ImageEncoder:
    """A copy with every BatchNorm folded into the conv before it: same outputs in eval mode, fewer
    passes over memory (1.4x faster on a 2-core CPU). For extraction only."""
    return ImageEncoder(encoder.name, fuse(encoder.body.eval(), inplace=False), encoder.head, encoder.categories,
                        encoder.choice)


def graph_copy(encoder: ImageEncoder, example: torch.Tensor) -> ImageEncoder:
    """A copy for CPU extraction whose body runs as one oneDNN Graph, for inputs shaped like `example`.

    The body is traced at `example`'s shape, frozen (BatchNorm folded, weights pre-packed) and
    handed to oneDNN Graph, which fuses each conv with its ReLU6 and residual add into one kernel:
    the activations make one pass through memory instead of three. About 1.7x the fastest eager
    setting on a 2-core CPU (`python -m helpers bench extract --sweep`), equal up to float32
    rounding (differences of about 1e-5). Costs 2-3 s once (tracing, then two profiling runs); other
    input shapes still run, after profiling again.

    It rests on TorchScript, which torch 2.x deprecates in favour of torch.compile: on this CPU
    torch.compile (with freezing) was only ~1.15x the eager model, after 11-14 s of compiling.
    """
    torch.jit.enable_onednn_fusion(True)      # process-wide; only TorchScript graphs are affected
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", r".*torch\.jit.* is deprecated", FutureWarning)
        graph = torch.jit.freeze(torch.jit.trace(encoder.body.eval(), example))
        for _ in range(2):                    # run 1 records shapes, run 2 builds the fused kernels
            graph(example)
    return ImageEncoder(encoder.name, graph, encoder.head, encoder.categories, encoder.choice)


class ImageDataset(Dataset):
    """Item i = `transform(subset.load_image(image_ids[i]))`, decoded in whichever process asks."""

    def __init__(self, subset, image_ids: list[int], transform):
        self.subset, self.image_ids, self.transform = subset, list(image_ids), transform

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.subset.load_image(self.image_ids[i]))


def default_num_workers(device: str | torch.device = "cpu") -> int:
    """DataLoader workers that decode JPEGs while the model runs.

    On CUDA the CPU is free: up to 8, one core left for the main process. On CPU the model already
    uses every core, and on 2 cores a decoding process competes with it (`python -m helpers bench
    extract --sweep`, graph, batch 8: 0 workers 176 images/s, 1 worker 126, 2 workers 122), so none
    there and one above.
    """
    cores = os.cpu_count() or 1
    if torch.device(device).type == "cuda":
        return max(1, min(8, cores - 1))
    return 0 if cores <= 2 else 1


def amp_on(device: torch.device, amp: bool | None) -> bool:
    """Autocast by default on CUDA only: on CPU it means bfloat16, which loses precision."""
    return (device.type == "cuda") if amp is None else amp


def _amp_context(device: torch.device, amp: bool | None):
    """float16 autocast on CUDA (by default); on CPU only when asked (bfloat16)."""
    if not amp_on(device, amp):
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def use_graph(device: torch.device, amp: bool | None, graph: bool | None = None) -> bool:
    """Whether image extraction runs the CNN as a fused oneDNN Graph: by default on CPU in float32.

    Not on CUDA (cuDNN already fuses what matters there) nor under autocast (the trace is float32).
    """
    possible = device.type == "cpu" and not amp_on(device, amp) and torch.backends.mkldnn.is_available()
    return possible if graph is None else (graph and possible)


def default_image_batch(device: str | torch.device = "cpu") -> int:
    """Images per batch: 8 on CPU (4-16 are equally fast for MobileNetV2 on 2 cores, 32-64 slower,
    and a small batch traces faster), 128 on CUDA."""
    return 128 if torch.device(device).type == "cuda" else 8


def _pad_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """(n, ...) -> (size, ...) with zero rows appended, so a fixed-shape graph can run the last batch."""
    return x if len(x) == size else torch.cat([x, x.new_zeros(size - len(x), *x.shape[1:])])


def extract_image_features(subset, image_ids: list[int], encoder, transform, batch_size: int | None = None,
                           num_workers: int | None = None, device: str | None = None, channels_last: bool = True,
                           amp: bool | None = None, fuse_bn: bool = True, graph: bool | None = None,
                           progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """N image ids -> (N, R, C) float16 regions, (N, C) float16 pooled, in the order of `image_ids`.

    On CPU the CNN runs as a oneDNN Graph (`graph_copy`, built once per encoder and
    input shape; the last batch is zero-padded to the full size): 176 images/s on the 2-core CPU
    against 104 for the fastest eager setting (`python -m helpers bench extract --sweep`). With
    `graph=False`, eager kernels with BatchNorm folded into the convs (`fuse_bn`) and channels-last
    memory, both exact up to rounding. bfloat16 autocast on CPU (`amp=True`) is faster on AMX CPUs but
    moves some regions far (cosine down to 0.75), so it is off unless asked; on CUDA float16 is on.
    """
    dev = get_device(device or course_device())
    cuda = dev.type == "cuda"
    batch_size = batch_size or default_image_batch(dev)
    num_workers = default_num_workers(dev) if num_workers is None else num_workers
    graph = use_graph(dev, amp, graph)
    loader = DataLoader(ImageDataset(subset, image_ids, transform), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=cuda, persistent_workers=False,
                        prefetch_factor=4 if num_workers else None)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if not graph:
        encoder = (inference_copy(encoder) if fuse_bn and isinstance(encoder, ImageEncoder) else encoder).eval()
        encoder.to(dev, memory_format=fmt)
    regions, pooled = [], []
    with torch.inference_mode(), _amp_context(dev, amp):
        for x in tqdm(loader, desc=f"images ({getattr(encoder, 'name', 'encoder')})", unit="batch",
                      disable=not progress, leave=False):
            n = len(x)
            x = x.to(dev, non_blocking=cuda).contiguous(memory_format=fmt)
            if graph:
                x = _pad_batch(x, batch_size)
                r, p = _graph_of(encoder, x)(x)
            else:
                r, p = encoder(x)
            regions.append(r[:n].to("cpu", torch.float16))
            pooled.append(p[:n].to("cpu", torch.float16))
    if not regions:
        return torch.zeros(0, 0, 0, dtype=torch.float16), torch.zeros(0, 0, dtype=torch.float16)
    return torch.cat(regions), torch.cat(pooled)


def _graph_of(encoder, x: torch.Tensor):
    """The (frozen) encoder's oneDNN Graph copy for inputs shaped and laid out like `x`, built on first
    use and kept on the encoder, so repeated extractions (the bench, a notebook) pay the 2-3 s once.
    Where tracing fails (a torch without TorchScript, an encoder it cannot trace): a warning, then eager."""
    graphs = encoder.__dict__.setdefault("_graphs", {})
    key = (tuple(x.shape), x.is_contiguous(memory_format=torch.channels_last), x.dtype)
    if key not in graphs:
        try:
            graphs[key] = graph_copy(encoder, x)
        except Exception as e:  # noqa: BLE001 - any failure here only costs speed
            warnings.warn(f"could not build a oneDNN Graph of {getattr(encoder, 'name', 'the encoder')} "
                          f"({type(e).__name__}: {e}); extracting with eager kernels instead", stacklevel=3)
            graphs[key] = encoder
    return graphs[key]


def pack(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) padded tokens, (B, T) bool mask -> (N_tok, D) valid tokens in caption order, (B + 1,) offsets."""
    lengths = mask.sum(1)
    return tokens[mask], torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])


def extract_text_features(captions: list[str], encoder, batch_size: int = 128, device: str | None = None,
                          amp: bool | None = None, progress: bool = True
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """N captions -> (N_tok, D) float16 packed tokens, (N + 1,) offsets, (N, D) float16 mean of valid tokens.

    Caption k's tokens ([CLS] ... [SEP]) are rows offsets[k]:offsets[k+1]. Batches are formed in
    order of token count, so each is padded only to its own longest caption; results come back in
    the original order. On the 2-core CPU batches of 32-128 are fastest (512: 1.5x slower);
    bfloat16 autocast (`amp=True`) is ~1.7x faster on AMX CPUs at token cosine >= 0.9999, but off
    by default on CPU so features do not depend on the machine's instruction set.
    """
    dev = get_device(device or course_device())
    captions = list(captions)
    n = len(captions)
    lengths = torch.tensor([len(ids) for ids in encoder.tokenize(captions, padding=False)["input_ids"]],
                           dtype=torch.long)
    order = torch.argsort(lengths, stable=True)
    encoder = encoder.eval().to(dev)
    packed_sorted, pooled = [], torch.zeros(n, encoder.dim, dtype=torch.float16)
    with torch.inference_mode(), _amp_context(dev, amp):
        for start in tqdm(range(0, n, batch_size), desc=f"captions ({getattr(encoder, 'name', 'encoder')})",
                          unit="batch", disable=not progress, leave=False):
            rows = order[start:start + batch_size]
            batch = encoder.tokenize([captions[i] for i in rows.tolist()])
            tok, mask = encoder(batch["input_ids"].to(dev), batch["attention_mask"].to(dev))
            tok = tok.float()                                             # padded positions are zero
            pooled[rows] = (tok.sum(1) / mask.sum(1, keepdim=True)).to("cpu", torch.float16)
            packed_sorted.append(pack(tok, mask)[0].to("cpu", torch.float16))
    if n == 0:
        return torch.zeros(0, encoder.dim, dtype=torch.float16), torch.zeros(1, dtype=torch.long), pooled
    packed_sorted = torch.cat(packed_sorted)
    # Un-sort: caption k (original order) sits at sorted position pos[k], from start_sorted[pos[k]].
    sorted_lengths = lengths[order]
    start_sorted = torch.cat([torch.zeros(1, dtype=torch.long), sorted_lengths.cumsum(0)[:-1]])
    pos = torch.empty_like(order)
    pos[order] = torch.arange(n)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    within = torch.arange(int(offsets[-1])) - torch.repeat_interleave(offsets[:-1], lengths)
    index = torch.repeat_interleave(start_sorted[pos], lengths) + within
    return packed_sorted[index], offsets, pooled
