"""Runs inside a submission's process: load the student's source, make the calls, send plain data.

Nothing in this module decides a verdict. It executes the calls the grader planned, converts what
comes back (tensors, arrays, dicts, anything) into wire descriptions, and writes one frame per call
to the result pipe. The grader rebuilds, checks and judges every number itself. It also records,
for the policy check, every attempt the submission makes to reach the grader's or the
reference's code (``_Watch``: GKP203).
"""

from __future__ import annotations

import inspect
import io
import linecache
import os
import random
import sys
import time
import traceback
import types
from typing import Any, Callable

import numpy as np
import torch

from gradkit.sandbox import wire

MAX_ELEMENTS = 1_000_000
MAX_ITEMS = 64
#: what one frame may carry back: values described, and bytes of array data
MAX_VALUES = 4096
MAX_BYTES = 16 << 20
FUNCTIONS = ("train_neural_net", "neural_net_predict")

# Captured when the worker imports this module, before any student code exists: a submission that
# patches torch, numpy or builtins changes what its own functions compute, never how gradkit reads
# their results back. (TensorBase and ndarray are immutable C types.)
_TensorBase = torch._C.TensorBase
_no_torch_function = torch._C.DisableTorchFunctionSubclass
_detach, _contiguous, _cpu, _numpy, _view = (_TensorBase.detach, _TensorBase.contiguous,
                                             _TensorBase.cpu, _TensorBase.numpy, _TensorBase.view)
_requires_grad = _TensorBase.requires_grad.__get__
_grad_fn = _TensorBase.grad_fn.__get__
_frombuffer, _empty, _manual_seed, _clone = torch.frombuffer, torch.empty, torch.manual_seed, \
    _TensorBase.clone
_ndarray_tobytes = np.ndarray.tobytes
_random_seed, _np_seed = random.seed, np.random.seed
_write, _perf_counter, _exit = os.write, time.perf_counter, os._exit
_STDOUT, _STDERR = sys.stdout, sys.stderr
_TORCH_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int16,
    torch.int32, torch.int64, torch.uint8, torch.bool)}


class Sender:
    """Writes frames to the result pipe, whole."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        data = memoryview(wire.pack(header, payload))
        while data:
            written = _write(self.fd, data)
            data = data[written:]


def _type_name(cls: type) -> str:
    try:
        name = type.__dict__["__qualname__"].__get__(cls)
        return name[:80] if isinstance(name, str) else "?"
    except BaseException:
        return "?"


class _Encoder:
    """Wire descriptions of returned values; tensors and arrays become raw bytes.

    It reads values through the C types' own methods (never the value's), calls no ``__repr__``,
    ``__eq__`` or ``__iter__`` a submission could define, and stops at a budget, so whatever a
    function returns, encoding it ends quickly and cannot raise.
    """

    def __init__(self) -> None:
        self.out = wire.PayloadWriter()
        self.values = 0
        self.bytes = 0

    def encode(self, value: Any, depth: int = 0) -> Any:
        self.values += 1
        cls = type(value)
        if self.values > MAX_VALUES:
            return {"kind": "object", "type": _type_name(cls),
                    "repr": "not read back: the result holds too many values"}
        try:
            return self._encode(value, cls, depth)
        except BaseException as exc:  # a hostile subclass: it is only an unreadable object
            return {"kind": "object", "type": _type_name(cls),
                    "repr": f"could not be read back ({_type_name(type(exc))})"}

    def _array(self, dtype: str, shape: tuple[int, ...], raw: bytes, source: str
               ) -> dict[str, Any]:
        if self.bytes + len(raw) > MAX_BYTES:
            return {"kind": "object", "type": source,
                    "repr": f"not read back: over {MAX_BYTES >> 20} MiB of results"}
        self.bytes += len(raw)
        desc = self.out.add(dtype, tuple(shape), raw)
        desc["source"] = source
        return desc

    def _encode(self, value: Any, cls: type, depth: int) -> Any:
        if issubclass(cls, _TensorBase):
            with _no_torch_function():
                t = _detach(value)
                shape = tuple(t.shape)
                # (the extent: an empty tensor of shape (0, 2**31 - 1) is not read back either)
                if t.is_complex() or wire.extent(shape) > MAX_ELEMENTS or \
                        t.layout != torch.strided:
                    return {"kind": "object", "type": "Tensor", "repr": f"tensor of shape "
                            f"{shape} and dtype {t.dtype}, which gradkit does not read back"}
                t = _contiguous(_cpu(t))
                name = str(t.dtype).removeprefix("torch.")
                raw = _view(t, torch.int16) if t.dtype == torch.bfloat16 else t
                desc = self._array(name, shape, _ndarray_tobytes(_numpy(raw)),
                                   "tensor" if cls is torch.Tensor else _type_name(cls))
                if _requires_grad(value) or _grad_fn(value) is not None:
                    desc["autograd"] = True
                return desc
        if issubclass(cls, np.ndarray):
            name = {"float16": "float16", "float32": "float32", "float64": "float64",
                    "int64": "int64", "int32": "int32", "bool": "bool", "uint8": "uint8",
                    "int8": "int8", "int16": "int16"}.get(np.ndarray.__dict__["dtype"]
                                                          .__get__(value).name)
            shape = tuple(np.ndarray.__dict__["shape"].__get__(value))
            if name is None or wire.extent(shape) > MAX_ELEMENTS:
                return {"kind": "object", "type": "ndarray", "repr": "array of a dtype or "
                        "size gradkit does not read back"}
            return self._array(name, shape, _ndarray_tobytes(value, "C"), "ndarray")
        if depth < 4 and issubclass(cls, dict):
            items = {}
            for key, item in list(dict.items(value))[:MAX_ITEMS]:
                items[_key(key)] = self.encode(item, depth + 1)
            return {"kind": "dict", "type": _type_name(cls), "items": items}
        if depth < 4 and issubclass(cls, (list, tuple)):
            iterate = list.__iter__ if issubclass(cls, list) else tuple.__iter__
            items = []
            for item in iterate(value):
                if len(items) >= MAX_ITEMS:
                    break
                items.append(self.encode(item, depth + 1))
            return {"kind": "list", "type": _type_name(cls), "items": items}
        if value is None:
            return {"kind": "scalar", "value": None, "type": "NoneType"}
        if issubclass(cls, bool):
            return {"kind": "scalar", "value": bool(int.__int__(value)), "type": "bool"}
        if issubclass(cls, int):
            number = int.__int__(value)
            return {"kind": "scalar", "value": float(number) if abs(number) > 1 << 53 else number,
                    "type": "int"}
        if issubclass(cls, float):
            return {"kind": "scalar", "value": float.__float__(value), "type": "float"}
        if issubclass(cls, str):
            return {"kind": "scalar", "value": str.__str__(value)[:200], "type": "str"}
        return {"kind": "object", "type": _type_name(cls), "repr": ""}


def _key(key: Any) -> str:
    if issubclass(type(key), str):
        return str.__str__(key)[:100]
    if issubclass(type(key), int) and not issubclass(type(key), bool):
        return str(int.__int__(key))
    return f"<{_type_name(type(key))}>"


# --- run-time evidence of autograd (for gradkit.policy) -------------------------------------

#: how many times each autograd entry point was called, since the child started
AUTOGRAD_CALLS: dict[str, int] = {}
_AUTOGRAD_ENTRY_POINTS = {
    "torch.autograd": ("backward", "grad"),
    "torch.autograd.functional": ("jacobian", "hessian", "vjp", "jvp", "hvp", "vhp"),
    "torch.func": ("grad", "grad_and_value", "vjp", "jvp", "jacrev", "jacfwd", "hessian",
                   "linearize"),
}


def _count_autograd() -> None:
    """Wrap the autograd entry points so each call is counted (``Tensor.backward`` goes through
    ``torch.autograd.backward``)."""
    import functools

    for module_name, names in _AUTOGRAD_ENTRY_POINTS.items():
        module = sys.modules.get(module_name)
        for name in names:
            original = getattr(module, name, None)
            if module is None or not callable(original):
                continue
            label = f"{module_name}.{name}"

            def counting(*args: Any, __original=original, __label=label, **kwargs: Any) -> Any:
                AUTOGRAD_CALLS[__label] = AUTOGRAD_CALLS.get(__label, 0) + 1
                return __original(*args, **kwargs)

            setattr(module, name, functools.wraps(original)(counting))


# --- run-time evidence of autograd, from the engine itself (for gradkit.policy) --------------
#
# The entry points above are names a submission can route around (a built getattr, the wrapper's
# own ``__wrapped__``). These are not: every autograd graph node takes a number from torch's
# per-thread sequence counter, which only grows, and anomaly mode makes the engine report every
# node it builds in any thread; forward-mode AD (which builds no node) is switched off before the
# submission loads, so using it means switching it back on; and a thread takes a process id from
# the run's own PID namespace.

_sequence_nr = getattr(getattr(torch._C, "_autograd", None), "_get_sequence_nr", None)
_is_fwd_grad_enabled = getattr(torch._C, "_is_fwd_grad_enabled", lambda: False)
_set_fwd_grad_enabled = getattr(torch._C, "_set_fwd_grad_enabled", None)
_pread, _fstat, _getpid, _listdir = os.pread, os.fstat, os.getpid, os.listdir
_set_anomaly_enabled = getattr(torch._C, "set_anomaly_enabled", None)
_is_anomaly_enabled = getattr(torch._C, "is_anomaly_enabled", lambda: False)
_LAST_PID = "/proc/sys/kernel/ns_last_pid"


class _NodesInAnyThread:
    """Graph nodes built in any thread. With anomaly mode on (one switch for the whole process),
    torch's engine calls ``torch.fx.traceback.format_stack`` for every node it builds, in
    whatever thread; that function is replaced by a counter. ``intact`` says whether the switch
    and the counter are still in place (a submission that turns them off is seen at the next
    read). A submission that builds no graph never calls it: it costs nothing."""

    def __init__(self) -> None:
        self.count = 0
        self.module = sys.modules.get("torch.fx.traceback")
        self.hook: Any = None
        if _set_anomaly_enabled is None:
            return
        try:
            import torch.fx.traceback as module

            def counted(*args: Any, **kwargs: Any) -> list:
                self.count += 1
                return []

            module.format_stack = counted
            self.module, self.hook = module, counted
            _set_anomaly_enabled(True, False)  # no NaN checks: only the count is wanted
        except BaseException:
            self.hook = None

    @property
    def active(self) -> bool:
        return self.hook is not None

    def intact(self) -> bool:
        try:
            return bool(_is_anomaly_enabled()) and \
                sys.modules.get("torch.fx.traceback") is self.module and \
                self.module.__dict__.get("format_stack") is self.hook
        except BaseException:
            return False

    def restore(self) -> None:
        try:
            sys.modules["torch.fx.traceback"] = self.module
            self.module.__dict__["format_stack"] = self.hook
            _set_anomaly_enabled(True, False)
        except BaseException:
            pass


class _ForwardModeWatch:
    """Forward-mode AD used in any thread, even switched on and back off within one call (as
    ``torch.func.jvp`` does) or in a thread of its own (a new thread starts with it on): torch's
    Python API reaches it only through two functions of ``torch._C``, looked up there at each
    use: ``_set_fwd_grad_enabled`` (switched on) and ``_enter_dual_level`` (a dual tensor needs
    a level). Both are replaced by counters that call the originals (also the one
    ``torch._functorch.predispatch`` keeps); ``intact`` says whether they are still in place."""

    _PLACES = (("torch._C", "_set_fwd_grad_enabled"), ("torch._C", "_enter_dual_level"),
               ("torch._functorch.predispatch", "_enter_dual_level_impl"))

    def __init__(self) -> None:
        self.count = 0
        self.hooks: list[tuple[Any, str, Any]] = []
        for module_name, name in self._PLACES:
            module = sys.modules.get(module_name)
            original = getattr(module, name, None)
            if module is None or original is None:
                continue
            hook = self._counter(original, switch=name == "_set_fwd_grad_enabled")
            try:
                setattr(module, name, hook)
            except BaseException:
                continue
            self.hooks.append((module, name, hook))

    def _counter(self, original: Callable, switch: bool) -> Callable:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if not switch or (args[0] if args else kwargs.get("enabled", True)):
                self.count += 1
            return original(*args, **kwargs)

        return counted

    def intact(self) -> bool:
        try:
            return all(module.__dict__.get(name) is hook for module, name, hook in self.hooks)
        except BaseException:
            return False

    def restore(self) -> None:
        for module, name, hook in self.hooks:
            try:
                module.__dict__[name] = hook
            except BaseException:
                pass


class _ThreadWatch:
    """Threads the submission started: in a PID namespace of the run's own (this process is PID
    2 or so), the namespace's last process id, which every new thread moves (the file is opened
    afresh for each read, so the submission sees no extra descriptor, and must be the same file
    as before it loaded); elsewhere, the threads alive when read."""

    def __init__(self) -> None:
        self.identity = None
        self.tasks = os.path.isdir("/proc/self/task")  # not on every system
        if _getpid() <= 3:
            try:
                fd = os.open(_LAST_PID, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    info = _fstat(fd)
                    self.identity = (info.st_dev, info.st_ino)
                finally:
                    os.close(fd)
            except OSError:
                self.identity = None
        self.mark = self._read()

    def _read(self) -> int:
        """A number that grows with every thread started; -1 if the watch was tampered with."""
        try:
            if self.identity is None:
                return len(_listdir("/proc/self/task")) - 1 if self.tasks else 0
            fd = os.open(_LAST_PID, os.O_RDONLY | os.O_CLOEXEC)
            try:
                info = _fstat(fd)
                if (info.st_dev, info.st_ino) != self.identity:
                    return -1
                return int(_pread(fd, 32, 0))
            finally:
                os.close(fd)
        except BaseException:
            return -1

    def started(self) -> int:
        """Threads started since the last call (-1: the watch cannot tell any more)."""
        now = self._read()
        if now < 0 or self.mark < 0:
            return -1
        started, self.mark = max(0, now - self.mark), now
        return started


class _EngineWatch:
    """What torch's autograd engine did while the submission's code ran, read from the engine.

    ``watch`` (autograd not allowed): forward-mode AD is switched off before the submission
    loads and again after each read, so using it means switching it back on, or entering a dual
    level in a thread of its own, which ``_ForwardModeWatch`` counts in any thread and the next
    read sees; graph nodes are counted in every thread (``_NodesInAnyThread``). Reverse-mode grad mode
    is left as it is: the node counters see every graph built, and a submission that uses
    autograd still runs, so the gradient checks can say whether its numbers are right.
    """

    def __init__(self, watch: bool) -> None:
        self.watch = watch
        self._switch_off()
        self.anywhere = _NodesInAnyThread() if watch else None
        self.forward = _ForwardModeWatch() if watch else None
        self.forward_counted = 0
        self.threads = _ThreadWatch()
        self.nodes = self._nodes()
        self.counted = 0

    def _switch_off(self) -> None:
        if self.watch and _set_fwd_grad_enabled is not None:
            _set_fwd_grad_enabled(False)

    @staticmethod
    def _nodes() -> int:
        return _sequence_nr() if _sequence_nr is not None else 0

    def read(self) -> dict[str, Any]:
        """Since the last read: autograd graph nodes built (in this thread, and in any thread
        while the all-thread counter is in place), whether forward-mode AD was found switched
        back on or the all-thread counter off, and threads started; then all is switched back."""
        nodes = self._nodes()
        grad_mode = self.watch and bool(_is_fwd_grad_enabled())
        built = max(0, nodes - self.nodes)
        anywhere = self.anywhere is not None and self.anywhere.active
        if anywhere:
            built = max(built, self.anywhere.count - self.counted)
            self.counted = self.anywhere.count
            if not self.anywhere.intact():
                grad_mode = True  # its watch switched off is autograd switched on, unseen
                self.anywhere.restore()
        if self.forward is not None:
            if self.forward.count > self.forward_counted:
                grad_mode = True  # switched on, or a dual level entered, in any thread
            self.forward_counted = self.forward.count
            if not self.forward.intact():
                grad_mode = True
                self.forward.restore()
        seen = {"nodes": built, "grad_mode": grad_mode, "threads": self.threads.started(),
                "all_threads": anywhere}
        self.nodes = nodes
        self._switch_off()
        return seen


# --- run-time evidence of delegation (for gradkit.policy, GKP203) ---------------------------

#: every attempt seen to reach the grader's or the reference's code: {"route", "target", "line"}
DELEGATION: list[dict[str, Any]] = []
MAX_DELEGATION = 20
_abspath, _normpath, _getframe = os.path.abspath, os.path.normpath, sys._getframe
_fspath, _str_startswith = os.fspath, str.startswith


class _Watch:
    """Records the submission's attempts to reach gradkit's grading side or the reference: an
    import of them by any route (the import statement and ``__import__`` raise the "import"
    audit event; ``importlib`` goes through the finder this installs first in
    ``sys.meta_path``), and opening or listing their files (the "open", "os.listdir" and
    "os.scandir" audit events). An audit hook cannot be removed; the finder can, the hook
    still sees the import statement. The folders are out of view, so every such attempt fails;
    this is the evidence that it was made."""

    def __init__(self, filename: str, gradkit: str, reference: str) -> None:
        self.filename = filename
        self.folders = tuple(_normpath(f) + os.sep for f in (gradkit, reference) if f)
        self.allowed = tuple(_normpath(os.path.join(gradkit, sub)) + os.sep
                             for sub in ("sandbox", "shims")) if gradkit else ()

    @staticmethod
    def forbidden_module(name: str) -> bool:
        top = name.partition(".")[0]
        if top == "reference":
            return name != "reference.toy_data"  # (the data the nn_helper shim serves)
        return top == "gradkit" and name != "gradkit" and not _str_startswith(
            name, ("gradkit.sandbox", "gradkit.shims"))

    def forbidden_path(self, path: Any) -> str:
        try:
            if type(path) is bytes:
                path = path.decode("utf-8", "replace")
            if type(path) is not str:
                path = _fspath(path) if not isinstance(path, int) else ""
            if type(path) is not str or not path:
                return ""
            full = _normpath(_abspath(path))
        except BaseException:
            return ""
        inside = full + os.sep
        if any(_str_startswith(inside, folder) for folder in self.folders) and \
                not any(_str_startswith(inside, folder) for folder in self.allowed):
            return full
        return ""

    def record(self, route: str, target: str) -> None:
        if len(DELEGATION) >= MAX_DELEGATION or any(
                seen["target"] == target and seen["route"] in (route, "import")
                for seen in DELEGATION):
            return
        line = None
        try:
            frame = _getframe(1)
            while frame is not None:
                if frame.f_code.co_filename == self.filename:
                    line = frame.f_lineno
                    break
                frame = frame.f_back
        except BaseException:
            pass
        DELEGATION.append({"route": route, "target": target[:300], "line": line})

    def __call__(self, event: str, args: tuple) -> None:
        if event == "import":
            if args and type(args[0]) is str and self.forbidden_module(args[0]):
                self.record("import", args[0])
        elif event in ("open", "os.listdir", "os.scandir"):
            target = self.forbidden_path(args[0]) if args else ""
            if target:
                self.record("opening their files" if event == "open" else "listing their files",
                            target)

    # the finder, first in sys.meta_path: sees importlib.import_module too
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if type(name) is str and self.forbidden_module(name):
            self.record("importlib", name)
        return None


def _watch(request: dict[str, Any]) -> None:
    watch = _Watch(request["filename"], request.get("gradkit") or "",
                   request.get("reference") or "")
    sys.meta_path.insert(0, watch)
    sys.addaudithook(watch)


def _student_error(exc: BaseException, filename: str) -> dict[str, Any]:
    """The exception, with the traceback trimmed to the student's own frames."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    # (a source line of megabytes made the frame too large to send: at most 300 characters)
    lines = [f"line {f.lineno}, in {str(f.name)[:80]}: {(f.line or '').strip()[:300]}"
             for f in frames]
    return {"type": _type_name(type(exc)), "message": _message(exc)[:1000],
            "traceback": lines[-8:], "line": frames[-1].lineno if frames else None}


def _message(exc: BaseException) -> str:
    """str(exc), without running a ``__str__`` the submission defined."""
    try:
        args = BaseException.__dict__["args"].__get__(exc)
        plain = all(type(a) in (str, int, float, bool, type(None)) for a in args)
        builtin = type(exc).__module__ == "builtins"
        if builtin and plain:
            return type(exc).__str__(exc)
        if plain:
            return BaseException.__str__(exc)
        return "<a message gradkit does not print>"
    except BaseException:
        return "<unprintable message>"


def _tensor(desc: dict[str, Any], payload: bytes) -> torch.Tensor:
    dtype, shape, raw = wire.check_array(desc, payload)
    if not raw:
        return _empty(shape, dtype=_TORCH_DTYPES[dtype])
    if dtype == "bfloat16":
        flat = _view(_frombuffer(bytearray(raw), dtype=torch.int16), torch.bfloat16)
    else:
        flat = _frombuffer(bytearray(raw), dtype=_TORCH_DTYPES[dtype])
    return _clone(flat.reshape(shape))


def _decode(value: Any, payload: bytes) -> Any:
    if wire.is_array(value):
        return _tensor(value, payload)
    if isinstance(value, dict):
        return {k: _decode(v, payload) for k, v in value.items()}
    return value


def _is_array(value: Any) -> bool:
    return issubclass(type(value), (_TensorBase, np.ndarray))


class _Capture:
    """Records the tensors a student's functions hold as they return (their intermediates)."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.frames: dict[str, dict[str, Any]] = {}

    def __call__(self, frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "return" and frame.f_code.co_filename == self.filename:
            found = {name: value for name, value in dict.items(frame.f_locals)
                     if _is_array(value)}
            if found:
                self.frames.setdefault(frame.f_code.co_name, {}).update(found)

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        previous = sys.getprofile()
        sys.setprofile(self)
        try:
            return fn(*args)
        finally:
            sys.setprofile(previous)


def _signature(fn: Any, args: int) -> str | None:
    """Why ``fn`` cannot take ``args`` positional arguments, or None if it can."""
    if not callable(fn):
        return f"is a {_type_name(type(fn))}, not a function"
    try:
        inspect.signature(fn).bind(*range(args))
    except TypeError as exc:
        return f"cannot be called with {args} positional arguments: {_message(exc)}"
    except BaseException:
        return None  # no signature to read (a builtin, or a strange object): let the call tell
    return None


def _run_call(call: dict[str, Any], payload: bytes, namespace: dict[str, Any], filename: str,
              engine: _EngineWatch | None = None, functions: tuple[str, ...] = FUNCTIONS
              ) -> tuple[dict[str, Any], bytes]:
    encoder = _Encoder()
    encode = encoder.encode
    kind = call["kind"]
    steps: list[dict[str, Any]] = []
    result: dict[str, Any] = {"type": "call", "id": call["id"], "steps": steps}
    started = _perf_counter()
    train, predict = namespace.get(functions[0]), namespace.get(functions[1])

    def fresh(name: str):
        value = call["inputs"].get(name)
        return None if value is None else _decode(value, payload)

    try:
        if kind == "predict":
            X, weights = fresh("X"), fresh("weights")
            returned = predict(X, weights)
            steps.append({"returned": encode(returned),
                          "after": {"X": encode(X), "weights": encode(weights)}})
        elif kind == "training":
            X, Y, weights = fresh("X"), fresh("Y"), fresh("weights")
            rows = fresh("rows").tolist()
            checkpoints = set(call["checkpoints"])
            lr = call["learning_rate"]
            for step, row in enumerate(rows, start=1):
                weights = train(X[row : row + 1], Y[row : row + 1], weights, lr)
                if step in checkpoints:
                    steps.append({"step": step, "returned": encode(weights)})
        else:  # step, chain, init
            batches = call["inputs"]["batches"]
            weights = fresh("weights")
            repeats = 2 if call.get("repeat") else 1
            for index, batch in enumerate(batches * repeats if repeats > 1 else batches):
                X, Y = _decode(batch["X"], payload), _decode(batch["Y"], payload)
                given = fresh("weights") if repeats > 1 else weights
                if kind == "init":
                    _manual_seed(call["seed"])
                # the caller's tensors themselves: a function that only rebinds the dict's
                # entries leaves them as they were (gradkit built ``given``: a plain dict)
                tensors = dict.copy(given) if type(given) is dict else None
                capture = _Capture(filename)
                if call["capture"]:
                    returned = capture.run(train, X, Y, given, call["learning_rate"])
                else:  # no profile hook on every function call where nothing is kept
                    returned = train(X, Y, given, call["learning_rate"])
                steps.append({
                    "returned": encode(returned),
                    "captured": {fn: {k: encode(v) for k, v in names.items()}
                                 for fn, names in capture.frames.items()} if call["capture"]
                    else {},
                    "after": {"X": encode(X), "Y": encode(Y), "weights": encode(given)},
                })
                if tensors is not None and any(dict.get(given, k) is not v
                                               for k, v in dict.items(tensors)):
                    steps[-1]["after"]["weight_tensors"] = encode(tensors)
                if kind == "chain" and index + 1 < len(batches):
                    if not issubclass(type(returned), dict):
                        break
                    with _no_torch_function():
                        weights = {_key(k): (_clone(_detach(v)) if issubclass(type(v), _TensorBase)
                                             else v) for k, v in dict.items(returned)}
        result["ok"] = True
    except BaseException as exc:  # SystemExit and KeyboardInterrupt are the student's too
        result["ok"] = False
        result["error"] = _student_error(exc, filename)
    result["seconds"] = _perf_counter() - started
    result["autograd_calls"] = dict(AUTOGRAD_CALLS)
    if engine is not None:
        result["engine"] = engine.read()
    result["delegation"] = list(DELEGATION)
    return result, encoder.out.getvalue()


def _module_tensors(namespace: dict[str, Any], encoder: _Encoder) -> dict[str, Any]:
    found = {}
    for name, value in list(dict.items(namespace)):
        if len(found) >= 64:
            break
        if issubclass(type(value), _TensorBase) and issubclass(type(name), str):
            try:
                small = _TensorBase.numel(value) <= 4096
            except BaseException:
                continue
            if small:
                found[str.__str__(name)] = encoder.encode(value)
    return found


#: the module the nn_helper shim takes the course's toy data from (built from the request)
TOY_DATA = "gradkit.sandbox.toy_data"


def _install_toy_data(source: str) -> None:
    """``reference/toy_data.py``'s source, sent as data, as the module ``TOY_DATA``: the shim's
    ``generate_x_y`` without the reference package (which stays out of view)."""
    if not source:
        return
    module = types.ModuleType(TOY_DATA, "The course's toy data (reference/toy_data.py, sent by "
                                        "the grader).")
    module.__file__ = "<gradkit: the course's toy data>"
    sys.modules[TOY_DATA] = module
    try:
        exec(compile(source, module.__file__, "exec"), module.__dict__)
    except BaseException:
        del sys.modules[TOY_DATA]


def main(request: dict[str, Any], payload: bytes, sender: Sender) -> None:
    """Load the submission, run every planned call, send a frame for each; never returns."""
    filename = request["filename"]
    _install_toy_data(request.get("toy_data") or "")
    source = request["source"]
    # lines as Python numbers them (str.splitlines also splits at \u2028, \x0c, ...)
    linecache.cache[filename] = (len(source), None, io.StringIO(source, newline="").readlines(),
                                 filename)
    sys.path.insert(0, request["workdir"])
    sys.path.append(request["shims"])
    module = types.ModuleType("submission")
    module.__file__ = filename
    sys.modules["submission"] = module
    _count_autograd()
    engine = _EngineWatch(watch=not request.get("autograd_allowed"))
    _watch(request)
    modules_before = set(sys.modules)
    # torch draws a fresh seed per process: a module that draws at load (module-level
    # torch.randn) would be graded on other numbers each run
    load_seed = int(request.get("load_seed", 0))
    _manual_seed(load_seed)
    _random_seed(load_seed)
    _np_seed(load_seed)
    started = _perf_counter()
    try:
        code = compile(source, filename, "exec")
        exec(code, module.__dict__)
        load: dict[str, Any] = {"type": "load", "ok": True}
    except BaseException as exc:
        load = {"type": "load", "ok": False, "error": _student_error(exc, filename)}
    load["seconds"] = _perf_counter() - started
    namespace = module.__dict__
    # the assignment's function names, sent by the grader as data (default: the notebook's)
    functions = tuple(request.get("functions") or FUNCTIONS)
    load["functions"] = {
        name: ("missing" if name not in namespace else
               _signature(namespace[name], 4 if name == functions[0] else 2) or "ok")
        for name in functions
    }
    load["new_modules"] = sorted(m for m in set(sys.modules) - modules_before
                                 if isinstance(m, str))[:500]
    load["autograd_calls"] = dict(AUTOGRAD_CALLS)
    load["engine"] = engine.read()
    load["delegation"] = list(DELEGATION)
    # module-level tensors, so the grader can recognise a forward pass that reads globals
    encoder = _Encoder()
    load["globals"] = _module_tensors(namespace, encoder)
    sender.send(load, encoder.out.getvalue())
    if load["ok"]:
        for call in request["calls"]:
            needed = functions[1] if call["kind"] == "predict" else functions[0]
            if load["functions"][needed] != "ok":
                continue
            header, data = _run_call(call, payload, namespace, filename, engine, functions)
            sender.send(header, data)
    for stream in (_STDOUT, _STDERR):
        try:
            stream.flush()
        except BaseException:
            pass
    sender.send({"type": "done"})
    _exit(0)
