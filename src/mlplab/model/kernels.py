"""The engine's compiled element-wise kernels (kernels.c): built once per machine with the C compiler, loaded
with ctypes; without a compiler the engine uses PyTorch ops that compute the same values (model/masks.py).

Why compiled at first use rather than at install: mlplab is a pure-Python package (pip needs no compiler and
no torch at build time), and the kernels need nothing from PyTorch but raw pointers, so a plain C file builds
in well under a second. The shared library is cached under $XDG_CACHE_HOME/mlplab/kernels/<hash>/ (the hash
covers the source, the flags and the machine type); concurrent first runs each build into a temporary file and
rename it into place, so a half-written library is never loaded.

MLPLAB_KERNELS=0 turns the compiled kernels off (the PyTorch fallback is used); CC picks the compiler. Why they are
unavailable is an exception type (KernelsUnavailable's subclasses, kept by failure()), not a message to match.
The whole step's arguments are one ctypes.Structure (Step, with one Layer per dense layer), mirrored field for
field by kernels.c's mlplab_step and mlplab_layer; the library reports its layout and a mismatch is not loaded.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

from mlplab.errors import MlplabError

VERSION = 8  # kernels.c's mlplab_kernels_version()
SOURCE = Path(__file__).with_name("kernels.c")
# -ffp-contract=off: no a*b+c contracted into an FMA, so results equal PyTorch's bit for bit. No -march=native:
# a cache shared between machines (a network home) must not hand one CPU another's instructions.
FLAGS = ("-O3", "-shared", "-fPIC", "-ffp-contract=off", "-fno-math-errno")
LIBS = ("-lm",)  # exp/log: linked explicitly rather than borrowed from whatever the process loaded
_TYPES = {torch.float32: ("f32", ctypes.c_float), torch.float64: ("f64", ctypes.c_double)}

_lock = threading.Lock()
_loaded: "dict[torch.dtype, Kernels] | None" = None
_status: str | None = None
_failure: "KernelsUnavailable | None" = None


# --- why the kernels are unavailable: one type per kind (callers test the type, never the message) -------------
class KernelsUnavailable(Exception):
    """The compiled kernels cannot be used; str(exc) is the one-line reason shown in status()."""


class KernelsOff(KernelsUnavailable):
    """Switched off on purpose (MLPLAB_KERNELS=0)."""


class CompilerMissing(KernelsUnavailable):
    """No C compiler found."""


class BuildFailed(KernelsUnavailable):
    """The compiler could not run, failed or took too long; or loading the result failed."""


class CacheUnwritable(KernelsUnavailable):
    """The kernel cache folder cannot be written (and building for the process only failed too)."""


class StaleLibrary(KernelsUnavailable):
    """The cached library is another version, or its argument layout differs from Step/Layer's."""


# --- the whole step's arguments: declared once here, mirrored by kernels.c's structs -----------------------------
class Layer(ctypes.Structure):
    """kernels.c's mlplab_layer: one dense layer's memory and constants for mlplab_train_step."""
    _fields_ = [
        ("weight", ctypes.c_void_p),           # (u, d)
        ("bias", ctypes.c_void_p),             # (u,)
        ("weight_momentum", ctypes.c_void_p),  # (u, d), NULL without momentum
        ("bias_momentum", ctypes.c_void_p),    # (u,), NULL without momentum
        ("scratch", ctypes.c_void_p),          # (u, d): the gradient on a first momentum step and with Nesterov
        ("z", ctypes.c_void_p),                # (n, u): the layer's output, activated and masked in place
        ("dh", ctypes.c_void_p),               # (n, d): dL/d(input); NULL for the first layer
        ("units", ctypes.c_int64),             # u
        ("flags", ctypes.c_int32),             # activations.COMPILED_RELU | COMPILED_DROPOUT (hidden layers)
        ("threshold", ctypes.c_int32),         # dropout: keep when the signed 16-bit draw is below it
        ("scale", ctypes.c_double),            # dropout: kept units' factor (rounded to the step's type in C)
        ("key", ctypes.c_uint64),              # dropout: this step's mask key
        ("weight_bf16", ctypes.c_void_p),      # bf16 only: (u, d) the weights rounded to bfloat16
        ("z_bf16", ctypes.c_void_p),           # bf16 only: (n, u) the output rounded
        ("dz_bf16", ctypes.c_void_p),          # bf16 only: (n, u) the output gradient rounded
    ]


class Step(ctypes.Structure):
    """kernels.c's mlplab_step: everything one mlplab_train_step call reads and writes."""
    _fields_ = [
        ("gemm", ctypes.c_void_p),             # the BLAS gemm (Fortran interface) of the step's type
        ("layers", ctypes.POINTER(Layer)),     # n_layers of them
        ("x", ctypes.c_void_p),                # (n, input_dim)
        ("y", ctypes.c_void_p),                # (n,) int64 labels
        ("dz_out", ctypes.c_void_p),           # (n, c): the output layer's gradient
        ("n", ctypes.c_int64),
        ("input_dim", ctypes.c_int64),
        ("lr", ctypes.c_double),
        ("momentum", ctypes.c_double),
        ("weight_decay", ctypes.c_double),
        ("n_layers", ctypes.c_int32),
        ("nesterov", ctypes.c_int32),
        ("init", ctypes.c_int32),              # 1: the first momentum step (buffers start as the gradient)
        ("stats", ctypes.c_double * 2),        # out: (loss sum, correct count)
        ("gemm_bf16", ctypes.c_void_p),        # bf16 only: the bf16 gemm (Kernels.gemm_bf16)
        ("x_bf16", ctypes.c_void_p),           # bf16 only: (n, input_dim) the batch rounded
        ("fused", ctypes.c_int32),             # bf16 only: 1 = element-wise work in the products' epilogues
        ("weights_rounded", ctypes.c_int32),   # bf16 only, in: weight_bf16 is current; out: left current
    ]


def _layout() -> list[int]:
    """Sizes and field offsets as kernels.c's mlplab_step_layout() reports them."""
    out = [ctypes.sizeof(Layer), ctypes.sizeof(Step)]
    out += [getattr(Layer, name).offset for name, _ in Layer._fields_]
    out += [getattr(Step, name).offset for name, _ in Step._fields_]
    return out


class Kernels:
    """The loaded library's entry points for one dtype, as raw ctypes functions (ctypes converts the arguments;
    pointers are tensor.data_ptr() of contiguous CPU tensors of that dtype; nothing here allocates tensors).
    masks.py, engine.py, fused_sgd.py and compiled_step.py call them; see kernels.c for what each computes."""

    def __init__(self, lib: ctypes.CDLL, suffix: str, ctype):
        p, i64, u64, i32, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_int32, ctypes.c_double
        signatures = {  # name: (argument types, result type)
            "relu_dropout_forward": ((p, i64, u64, i32, ctype), None),
            "dropout_forward": ((p, p, i64, u64, i32, ctype), None),
            "dropout_backward": ((p, i64, u64, i32, ctype), None),
            "relu_backward": ((p, p, i64, ctype), None),
            "softmax_xent": ((p, p, p, i64, i64, ctype, p), i64),
            "bias_sgd": ((p, p, p, i64, i64, f64, f64, f64, ctypes.c_int, ctypes.c_int), ctypes.c_int),
            "train_step": ((ctypes.POINTER(Step),), i64),
        }
        for name, (argtypes, restype) in signatures.items():
            fn = getattr(lib, f"mlplab_{name}_{suffix}")
            fn.argtypes, fn.restype = argtypes, restype
            setattr(self, name, fn)
        self.gemm = _blas_gemm(suffix)  # PyTorch's own BLAS gemm for train_step, or None
        # bf16 mixed precision (float32 masters): a bf16 gemm with float32 output (kernels.c's own on AVX512-BF16,
        # else MKL's), its name for status lines, and the thread count it splits its blocks between
        self.gemm_bf16, self.gemm_bf16_name = _bf16_gemm(lib) if suffix == "f32" else (None, None)
        self._set_gemm_threads = lib.mlplab_gemm_bf16_set_threads
        self._set_gemm_threads.argtypes, self._set_gemm_threads.restype = (ctypes.c_int,), None
        self._lib_key = lib._handle
        _gemm_threads.pop(self._lib_key, None)  # a library just loaded starts at 1 thread
        self.set_gemm_threads(torch.get_num_threads())  # the bf16 step sets it again before each call
        self.train_step_bf16 = None
        if self.gemm_bf16 is not None:
            self.train_step_bf16 = lib.mlplab_train_step_bf16
            self.train_step_bf16.argtypes, self.train_step_bf16.restype = (ctypes.POINTER(Step),), i64

    def set_gemm_threads(self, n: int) -> None:
        """The thread count the bf16 GEMM splits its blocks between (a setting of the library, shared by all
        Kernels); a ctypes call only when it changes, since the bf16 step sets it before every call."""
        if _gemm_threads.get(self._lib_key) != n:
            self._set_gemm_threads(n)
            _gemm_threads[self._lib_key] = n


_gemm_threads: dict = {}  # per loaded library (its handle): its setting, as set through Kernels.set_gemm_threads


def _blas_gemm(suffix: str) -> int | None:
    """The address of the Fortran-interface gemm (sgemm_/dgemm_) in PyTorch's own CPU library, when it exports
    one (its x86-64 builds link MKL and do), so the compiled step multiplies with exactly PyTorch's BLAS and
    threads. None otherwise: the engine then calls the products from Python."""
    if not torch.backends.mkl.is_available():
        return None
    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))  # already loaded
        fn = getattr(lib, ("sgemm_" if suffix == "f32" else "dgemm_"))
    except (OSError, AttributeError):
        return None
    address = ctypes.cast(fn, ctypes.c_void_p).value
    return address if _gemm_works(address, suffix) else None


def _bf16_gemm(lib: ctypes.CDLL) -> "tuple[int | None, str | None]":
    """(address, name) of the bf16 gemm with float32 accumulation and output for the bf16 step, or (None, None).

    kernels.c's own (mlplab_gemm_bf16) where the CPU has AVX512-BF16 and no AMX: MKL's cblas_gemm_bf16bf16f32 in
    PyTorch's library runs at float32 speed on AMD CPUs (155 GFLOP/s on the development machine's EPYC, against
    450-680 for ours and for oneDNN's bf16 matmul), while on Intel CPUs with AMX MKL uses the tile unit, which ours
    does not. MKL's where ours cannot run. Each candidate is checked with one small product first."""
    candidates = []
    lib.mlplab_gemm_bf16_available.restype = ctypes.c_int
    if lib.mlplab_gemm_bf16_available():
        candidates.append(("mlplab AVX512-BF16", ctypes.cast(lib.mlplab_gemm_bf16, ctypes.c_void_p).value))
    if torch.backends.mkl.is_available():
        try:
            mkl = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))  # already loaded
            mkl_entry = ("MKL", ctypes.cast(mkl.cblas_gemm_bf16bf16f32, ctypes.c_void_p).value)
            candidates.insert(0 if _cpu_flags() & {"amx_bf16"} else len(candidates), mkl_entry)
        except (OSError, AttributeError):
            pass
    for name, address in candidates:
        if _bf16_gemm_works(address):
            return address, name
    return None, None


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _bf16_gemm_works(address: int) -> bool:
    """One small product per transpose case through the pointer against float32 torch.mm on the same bf16
    values (exact: small integers over powers of two), with a sentinel after C that must stay untouched."""
    i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    gemm = ctypes.CFUNCTYPE(None, i, i, i, i, i, i, f, p, i, p, i, f, p, i)(address)
    a = (torch.arange(1.0, 16.0) / 4).view(3, 5).to(torch.bfloat16)    # (3, 5), exact in bf16
    b = (torch.arange(1.0, 36.0) / 8).view(5, 7).to(torch.bfloat16)    # (5, 7): an odd k
    for ta in (False, True):
        for tb in (False, True):
            aa, bb = (a.t().contiguous() if ta else a), (b.t().contiguous() if tb else b)
            guard = torch.cat([torch.full((21,), -1.0), torch.full((4,), 7.0)])  # C (3, 7), then a sentinel
            gemm(101, 112 if ta else 111, 112 if tb else 111, 3, 7, 5, 1.0, aa.data_ptr(), aa.shape[1],
                 bb.data_ptr(), bb.shape[1], 0.0, guard.data_ptr(), 7)
            if not (torch.equal(guard[:21].view(3, 7), a.float() @ b.float())
                    and torch.equal(guard[21:], torch.full((4,), 7.0))):
                return False
    return True


def _gemm_works(address: int, suffix: str) -> bool:
    """One small product through the pointer against torch.mm: a BLAS with other integer sizes (ILP64) or
    conventions is left unused instead of corrupting memory."""
    dtype, ctype = (torch.float32, ctypes.c_float) if suffix == "f32" else (torch.float64, ctypes.c_double)
    i32, ptr = ctypes.POINTER(ctypes.c_int), ctypes.c_void_p
    gemm = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, i32, i32, i32, ctypes.POINTER(ctype), ptr, i32,
                            ptr, i32, ctypes.POINTER(ctype), ptr, i32)(address)
    a = torch.arange(1.0, 7.0, dtype=dtype).view(2, 3)    # row-major (2, 3)
    b = torch.arange(1.0, 13.0, dtype=dtype).view(3, 4)   # row-major (3, 4)
    sentinel = torch.full((4,), 7.0, dtype=dtype)          # must stay untouched
    guard = torch.cat([torch.full((8,), -1.0, dtype=dtype), sentinel])  # C (2, 4), then the sentinel
    ints = [ctypes.c_int(v) for v in (4, 2, 3, 4, 3, 4)]  # m, n, k, ldb(=B's row length), lda, ldc
    m, n, k, ld_b, ld_a, ld_c = (ctypes.byref(v) for v in ints)
    # C^T (4 x 2) = B^T (4 x 3) A^T (3 x 2) in column-major terms: gemm(N, N, 4, 2, 3, 1, B, 4, A, 3, 0, C, 4)
    gemm(b"N", b"N", m, n, k, ctypes.byref(ctype(1.0)), b.data_ptr(), ld_b, a.data_ptr(), ld_a,
         ctypes.byref(ctype(0.0)), guard.data_ptr(), ld_c)
    return bool(torch.equal(guard[:8].view(2, 4), a @ b) and torch.equal(guard[8:], sentinel))


def label_out_of_range(label: int, c: int) -> MlplabError:
    """The error for a label the loss kernels found outside 0..c-1 (they report the row; nothing was changed)."""
    return MlplabError(f"label {label} is outside 0..{c - 1} (the model has {c} outputs)")


def failure() -> "KernelsUnavailable | None":
    """Why the kernels are unavailable (an exception of one of the kinds above), or None when they loaded."""
    get()
    return _failure


def for_tensor(t: torch.Tensor) -> Kernels | None:
    """The kernels for t's dtype when t is on the CPU and they are loaded (built on first use), else None.

    Called once per training step, so it is kept to a few attribute reads."""
    by_dtype = _loaded if _status is not None else get()
    if by_dtype is None or not t.is_cpu:
        return None
    return by_dtype.get(t.dtype)


def get() -> "dict[torch.dtype, Kernels] | None":
    """The compiled kernels by dtype, building them on first use; None when they are off or cannot be built."""
    global _loaded, _status, _failure
    if _status is None:
        with _lock:
            if _status is None:
                try:
                    _loaded, _status = _load()
                except KernelsUnavailable as exc:
                    _loaded, _failure, _status = None, exc, f"PyTorch fallback ({exc})"
                except Exception as exc:  # a broken compiler or cache must never stop training: fall back
                    _failure = BuildFailed(f"kernel build failed: {_one_line(exc)}")
                    _loaded, _status = None, f"PyTorch fallback ({_failure})"
    return _loaded


def status() -> str:
    """One line for run manifests and `mlplab train`'s header: which element-wise path the engine uses."""
    get()
    return _status or ""


def _reset() -> None:
    """Forget the loaded state (tests switch MLPLAB_KERNELS and the cache folder)."""
    global _loaded, _status, _failure
    with _lock:
        _loaded, _status, _failure = None, None, None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def _cache_root() -> Path:
    from mlplab.data.locations import cache_dir

    return cache_dir() / "kernels"


def library_path(source: bytes | None = None, name: str = "libmlplab_kernels.so") -> Path:
    """Where the built library is cached: one folder per (source, flags, machine type)."""
    source = SOURCE.read_bytes() if source is None else source
    digest = hashlib.sha256(source + repr((FLAGS, LIBS, platform.machine(), platform.system())).encode()).hexdigest()
    return _cache_root() / digest[:16] / name


def compile_library(source_path: Path, name: str) -> "tuple[ctypes.CDLL, str]":
    """Another C file of mlplab's (inspect/tsne.c) built, cached and loaded as kernels.c is: (library, where it
    was loaded from). Raises a KernelsUnavailable kind when it cannot be (MLPLAB_KERNELS=0 included); the caller
    checks its version and falls back to Python code."""
    if os.environ.get("MLPLAB_KERNELS", "").strip() == "0":
        raise KernelsOff("MLPLAB_KERNELS=0")
    return _open_library(Path(source_path).read_bytes(), name)


def _load() -> "tuple[dict[torch.dtype, Kernels], str]":
    """The loaded kernels and the status line; raises a KernelsUnavailable kind when they cannot be used."""
    if os.environ.get("MLPLAB_KERNELS", "").strip() == "0":
        raise KernelsOff("MLPLAB_KERNELS=0")
    lib, where = _open_library(SOURCE.read_bytes(), "libmlplab_kernels.so")
    lib.mlplab_kernels_version.restype = ctypes.c_int
    if lib.mlplab_kernels_version() != VERSION:
        raise StaleLibrary(f"stale kernel library {where}")
    expected = _layout()
    reported = (ctypes.c_int64 * len(expected))()
    lib.mlplab_step_layout.argtypes, lib.mlplab_step_layout.restype = (ctypes.c_void_p, ctypes.c_int64), ctypes.c_int64
    if lib.mlplab_step_layout(ctypes.addressof(reported), len(expected)) != len(expected) or list(reported) != expected:
        raise StaleLibrary(f"kernel library {where} disagrees with kernels.py's Step/Layer layout")
    loaded = {dtype: Kernels(lib, suffix, ctype) for dtype, (suffix, ctype) in _TYPES.items()}
    whole_step = ("the whole step in C on PyTorch's BLAS" if loaded[torch.float32].gemm is not None
                  else "this PyTorch exports no usable BLAS gemm, so steps run op by op")
    return loaded, f"compiled C kernels, {whole_step} ({where})"


def _open_library(source: bytes, name: str) -> "tuple[ctypes.CDLL, str]":
    """The library built from `source`, from the cache or built into it (or, where the cache cannot be written,
    for this process only); raises a KernelsUnavailable kind when it cannot be built or loaded."""
    lib_path = library_path(source, name)
    folder = lib_path.parent
    where = str(lib_path)
    try:
        if not lib_path.exists():
            _build(source, folder, lib_path)
        try:
            lib = ctypes.CDLL(str(lib_path))
        except OSError:
            # a damaged cache file (the build itself is atomic): build again once, then give up
            _build(source, folder, lib_path)
            lib = ctypes.CDLL(str(lib_path))
    except CacheUnwritable as error:
        # a read-only home: build for this process only, in a private folder (never a shared, predictable path
        # another user could plant a library in); the loaded library stays mapped after the folder is removed
        try:
            private = Path(tempfile.mkdtemp(prefix="mlplab-kernels-"))
        except OSError as exc:  # no writable temp folder either: the PyTorch path still works
            raise CacheUnwritable(f"{error}; no temporary folder: {exc.strerror or exc}") from None
        try:
            try:
                _build(source, private, private / lib_path.name)
            except KernelsUnavailable as error2:
                raise CacheUnwritable(f"{error}; {error2}") from None
            lib = ctypes.CDLL(str(private / lib_path.name))
        finally:
            shutil.rmtree(private, ignore_errors=True)
        where = f"built for this process only: {error}"
    return lib, where


def _build(source: bytes, folder: Path, lib_path: Path) -> None:
    """Compile a C source (kernels.c, inspect/tsne.c) into lib_path atomically; raises a KernelsUnavailable kind
    when it cannot."""
    cc_env = os.environ.get("CC", "").strip()
    command = shlex.split(cc_env) if cc_env else [shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")]
    if not command or not command[0]:
        raise CompilerMissing("no C compiler found; install gcc or set CC")
    compiler = " ".join(command)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(folder)
        fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=folder)
        os.close(fd)
        src = Path(tmp).with_suffix(".c")
        src.write_bytes(source)
    except OSError as exc:
        raise CacheUnwritable(f"cannot write the kernel cache {folder}: {exc.strerror or exc}") from None
    try:
        # OpenMP for the bf16 gemm's threads (the runtime is the libgomp PyTorch already loaded); without it if the
        # compiler has none (the gemm then runs on one thread), without run-time CPU dispatch if it refuses that
        for extra in (("-fopenmp",), (), ("-DMLPLAB_NO_CLONES",)):
            try:
                proc = subprocess.run([*command, *FLAGS, *extra, "-o", tmp, str(src), *LIBS], capture_output=True,
                                      text=True, timeout=120)
            except subprocess.TimeoutExpired:
                raise BuildFailed(f"the C compiler {compiler} took over 120 s") from None
            except OSError as exc:
                raise BuildFailed(f"the C compiler {compiler} could not run: {exc.strerror or exc}") from None
            if proc.returncode == 0:
                break
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            first = detail[0] if detail else f"exit {proc.returncode}"
            raise BuildFailed(f"the C compiler {compiler} failed: {first}")
        try:
            os.replace(tmp, lib_path)
        except OSError as exc:
            raise CacheUnwritable(f"cannot write the kernel cache {folder}: {exc.strerror or exc}") from None
    finally:
        src.unlink(missing_ok=True)
        Path(tmp).unlink(missing_ok=True)


def _remove_stale_temporaries(folder: Path) -> None:
    """Temporary files of builds killed an hour or more ago (a build takes about a second)."""
    cutoff = time.time() - 3600
    for leftover in [*folder.glob("*.so.tmp"), *folder.glob("*.so.c")]:
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except OSError:
            pass  # another process's file, or already gone
