"""FlashInfer kernels at the challenges' shapes: the peers in scripts/benchmark.py's report.

A peer is one FlashInfer call at a challenge's performance shape, on inputs in FlashInfer's
own dtypes (it has no float32 decode), timed by the benchmark as every solution is and set
against the read floor at its own bytes. Peers are timed, not checked against the challenge's
reference: their dtypes differ from the challenge's.

- 95: ``BatchDecodeWithPagedKVCacheWrapper``, the wrapper FlashInfer documents for batches
  (its ``single_decode_with_kv_cache`` takes one sequence), in fp16: at the same shapes (half
  95's bytes), and with twice the tokens (95's bytes).
- 96: the same wrapper with an FP8 (e4m3) KV cache at 96's shape (32 heads, no grouping, one
  sequence). FlashInfer has FP8 KV with one scale per tensor, no int8 with per-token scales.
- 97: the same wrapper in fp16 on 97's own block table and seq_lens (pages of block_size
  tokens, NHD: 97's cache layout).
- 98: FP8 (e4m3) KV at 98's shape (FlashInfer's one scale per tensor, 98's one per KV head).
- 99: ``BatchMLAPagedAttentionWrapper`` in bf16 at 99's shape.

Paged caches are NHD, ``(num_pages, page_size, num_kv_heads, head_dim)``: page_size 16 for
95, 96 and 98 with each sequence's pages consecutive; 97's block size and table. MLA pages
hold 16 tokens. Only the wrappers' plan and run are called, their optional arguments by
keyword (recent releases deprecate passing them by position).
"""

import functools
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch

WORKSPACE_BYTES = 128 * 2**20  # the float workspace size FlashInfer's docs recommend
PAGE_SIZE = 16  # pages of the decode peers of 95, 96 and 98 (97 keeps its block size)
MLA_PAGE_SIZE = 16
FP8_SCALE = 0.01  # k_scale and v_scale of the FP8 peers (one per tensor)


@dataclass(frozen=True)
class PagedLayout:
    """Where each sequence's tokens lie in a pool of ``num_pages`` pages, FlashInfer's CSR
    form: sequence b owns pages ``indices[indptr[b]:indptr[b + 1]]`` in order, the last of
    them holding ``last_page_len[b]`` tokens (1 to page_size). int32 tensors on the CPU:
    indptr (batch + 1,), indices (pages used,), last_page_len (batch,)."""

    indptr: torch.Tensor
    indices: torch.Tensor
    last_page_len: torch.Tensor
    num_pages: int
    page_size: int

    @property
    def batch(self) -> int:
        return len(self.last_page_len)

    @property
    def tokens(self) -> int:
        """Tokens over all sequences."""
        pages = self.indptr[1:] - self.indptr[:-1]
        return int(((pages - 1) * self.page_size + self.last_page_len).sum())

    @property
    def nbytes(self) -> int:
        """Bytes of the three index tensors."""
        return self.indptr.nbytes + self.indices.nbytes + self.last_page_len.nbytes


def _csr(pages: Sequence[int], lengths: Sequence[int], indices, num_pages, page_size):
    indptr = torch.zeros(len(pages) + 1, dtype=torch.int32)
    indptr[1:] = torch.tensor(pages, dtype=torch.int64).cumsum(0).to(torch.int32)
    last = [n - (p - 1) * page_size for n, p in zip(lengths, pages)]
    return PagedLayout(
        indptr, indices.to(torch.int32), torch.tensor(last, dtype=torch.int32), num_pages, page_size
    )


def consecutive_pages(lengths: Sequence[int], page_size: int) -> PagedLayout:
    """Sequences of ``lengths`` tokens (each at least 1) in pages of ``page_size``, each
    sequence's pages consecutive in the pool, sequence 0 first; the pool holds just those."""
    pages = [-(-n // page_size) for n in lengths]
    total = sum(pages)
    return _csr(pages, lengths, torch.arange(total), total, page_size)


def from_block_table(
    block_table: torch.Tensor, seq_lens: torch.Tensor, block_size: int, num_blocks: int
) -> PagedLayout:
    """97's block table ((batch, max_blocks_per_seq) int32, -1 past each sequence's pages) and
    seq_lens ((batch,) int32) in FlashInfer's CSR form, over the same pool of ``num_blocks``."""
    lengths = [int(n) for n in seq_lens.cpu()]
    table = block_table.cpu()
    pages = [-(-n // block_size) for n in lengths]
    indices = torch.cat([table[b, :p] for b, p in enumerate(pages)])
    return _csr(pages, lengths, indices, num_blocks, block_size)


@dataclass
class Peer:
    """One FlashInfer call at a challenge's shape.

    label: the report's row, "FlashInfer <what> (<dtype>)".
    nbytes: bytes a call must move: its inputs read once (the attended KV rows only) and its
        output written once; the read floor is measured at this size.
    make: ``make(count)`` plans once and returns ``count`` zero-argument calls, each over
        inputs of its own, for the benchmark to rotate through (no call finds its inputs in L2).
    """

    label: str
    nbytes: int
    make: Callable[[int], List[Callable[[], None]]]


def flashinfer_missing() -> Optional[str]:
    """None where ``import flashinfer`` succeeds, else why it does not."""
    try:
        import flashinfer  # noqa: F401
    except Exception as exc:  # an ImportError, or a broken install failing on import
        return f"import flashinfer failed ({type(exc).__name__}: {exc})"
    return None


def _random(shape, dtype: torch.dtype) -> torch.Tensor:
    """Normal random values of ``dtype`` on the GPU (FP8 from fp16 draws, halved)."""
    if dtype == torch.float8_e4m3fn:
        return (torch.randn(shape, device="cuda", dtype=torch.float16) * 0.5).to(dtype)
    return torch.randn(shape, device="cuda", dtype=dtype)


def decode_peer(
    label: str, layout: PagedLayout, q_heads: int, kv_heads: int, head_dim: int, kv_dtype
) -> Peer:
    """``BatchDecodeWithPagedKVCacheWrapper`` over ``layout`` (NHD pages of ``kv_dtype``,
    torch.float16 or torch.float8_e4m3fn), fp16 queries (batch, q_heads, head_dim) and output.
    Bytes: Q and the output in fp16, the attended K and V rows, the index tensors."""
    row_bytes = kv_heads * head_dim * torch.empty(0, dtype=kv_dtype).element_size()
    q_bytes = layout.batch * q_heads * head_dim * 2
    nbytes = 2 * q_bytes + 2 * layout.tokens * row_bytes + layout.nbytes

    def make(count: int) -> List[Callable[[], None]]:
        import flashinfer

        workspace = torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device="cuda")
        wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, kv_layout="NHD")
        wrapper.plan(
            layout.indptr.cuda(),
            layout.indices.cuda(),
            layout.last_page_len.cuda(),
            q_heads,
            kv_heads,
            head_dim,
            layout.page_size,
            q_data_type=torch.float16,
            kv_data_type=kv_dtype,
        )
        scales = {} if kv_dtype == torch.float16 else {"k_scale": FP8_SCALE, "v_scale": FP8_SCALE}
        cache = (layout.num_pages, layout.page_size, kv_heads, head_dim)
        calls = []
        for _ in range(count):
            q = _random((layout.batch, q_heads, head_dim), torch.float16)
            kv = (_random(cache, kv_dtype), _random(cache, kv_dtype))
            out = torch.empty_like(q)
            calls.append(functools.partial(wrapper.run, q, kv, out=out, **scales))
        return calls

    return Peer(label, nbytes, make)


def mla_peer(label: str, batch, heads, cache_len, rank, rope, softmax_scale) -> Peer:
    """``BatchMLAPagedAttentionWrapper`` in bf16: q_nope (batch, heads, rank), q_pe (batch,
    heads, rope), the latent cache (pages, MLA_PAGE_SIZE, rank) and rotary keys (pages,
    MLA_PAGE_SIZE, rope), each sequence's pages consecutive; output (batch, heads, rank).
    Bytes: every tensor once in bf16, and the index tensors (qo_indptr, kv_indptr, kv_indices,
    kv_len_arr)."""
    layout = consecutive_pages([cache_len] * batch, MLA_PAGE_SIZE)
    elements = 2 * batch * heads * rank + batch * heads * rope + batch * cache_len * (rank + rope)
    nbytes = 2 * elements + layout.nbytes + layout.indptr.nbytes  # kv_len_arr: last_page_len's size

    def make(count: int) -> List[Callable[[], None]]:
        import flashinfer.mla

        workspace = torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device="cuda")
        wrapper = flashinfer.mla.BatchMLAPagedAttentionWrapper(workspace)
        kv_lens = torch.full((batch,), cache_len, dtype=torch.int32, device="cuda")
        with warnings.catch_warnings():  # newer releases prefer a metadata object; both work
            warnings.simplefilter("ignore", DeprecationWarning)
            wrapper.plan(
                qo_indptr=torch.arange(batch + 1, dtype=torch.int32, device="cuda"),
                kv_indptr=layout.indptr.cuda(),
                kv_indices=layout.indices.cuda(),
                kv_len_arr=kv_lens,
                num_heads=heads,
                head_dim_ckv=rank,
                head_dim_kpe=rope,
                page_size=MLA_PAGE_SIZE,
                causal=False,
                sm_scale=softmax_scale,
                q_data_type=torch.bfloat16,
                kv_data_type=torch.bfloat16,
            )
        calls = []
        for _ in range(count):
            tensors = {
                "q_nope": _random((batch, heads, rank), torch.bfloat16),
                "q_pe": _random((batch, heads, rope), torch.bfloat16),
                "ckv_cache": _random((layout.num_pages, MLA_PAGE_SIZE, rank), torch.bfloat16),
                "kpe_cache": _random((layout.num_pages, MLA_PAGE_SIZE, rope), torch.bfloat16),
            }
            tensors["out"] = torch.empty_like(tensors["q_nope"])
            calls.append(functools.partial(wrapper.run, **tensors))
        return calls

    return Peer(label, nbytes, make)


def peers_for(number: str, kwargs: Dict[str, object]) -> List[Peer]:
    """The peers of challenge ``number`` at the shape of ``kwargs`` (its performance test's
    solve arguments); nothing is allocated until a peer's ``make`` runs."""
    fp16, fp8 = torch.float16, torch.float8_e4m3fn
    if number == "95":
        b, hq, hkv = kwargs["batch_size"], kwargs["num_q_heads"], kwargs["num_kv_heads"]
        s, d = kwargs["cache_len"], kwargs["head_dim"]
        return [
            decode_peer(
                "FlashInfer batch decode, the same shapes (fp16)",
                consecutive_pages([s] * b, PAGE_SIZE),
                hq,
                hkv,
                d,
                fp16,
            ),
            decode_peer(
                "FlashInfer batch decode, the same bytes: twice the tokens (fp16)",
                consecutive_pages([2 * s] * b, PAGE_SIZE),
                hq,
                hkv,
                d,
                fp16,
            ),
        ]
    if number == "96":
        h, s, d = kwargs["num_heads"], kwargs["seq_len"], kwargs["head_dim"]
        layout = consecutive_pages([s], PAGE_SIZE)
        return [decode_peer("FlashInfer batch decode, FP8 KV, fp16 q (e4m3)", layout, h, h, d, fp8)]
    if number == "97":
        layout = from_block_table(
            kwargs["block_table"], kwargs["seq_lens"], kwargs["block_size"], kwargs["num_blocks"]
        )
        hq, hkv, d = kwargs["num_q_heads"], kwargs["num_kv_heads"], kwargs["head_dim"]
        label = "FlashInfer paged decode, 97's block table (fp16)"
        return [decode_peer(label, layout, hq, hkv, d, fp16)]
    if number == "98":
        b, hq, hkv = kwargs["batch_size"], kwargs["num_q_heads"], kwargs["num_kv_heads"]
        layout = consecutive_pages([kwargs["cache_len"]] * b, PAGE_SIZE)
        label = "FlashInfer batch decode, FP8 KV, fp16 q (e4m3)"
        return [decode_peer(label, layout, hq, hkv, kwargs["head_dim"], fp8)]
    if number == "99":
        sizes = ("batch_size", "num_heads", "cache_len", "kv_lora_rank", "rope_dim")
        args = [kwargs[k] for k in sizes] + [kwargs["softmax_scale"]]
        return [mla_peer("FlashInfer MLA decode (bf16)", *args)]
    return []
