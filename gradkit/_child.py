"""Runs inside a submission's process: load the student's source, make the calls, send plain data.

Nothing in this module decides a verdict. It executes the calls the grader planned, converts what
comes back (tensors, arrays, dicts, anything) into wire descriptions, and writes one frame per call
to the result pipe. The grader rebuilds, checks and judges every number itself.
"""

from __future__ import annotations

import inspect
import linecache
import os
import reprlib
import sys
import time
import traceback
import types
from typing import Any, Callable

from gradkit import wire

MAX_ELEMENTS = 1_000_000
MAX_ITEMS = 64
FUNCTIONS = ("train_neural_net", "neural_net_predict")


class _Sender:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        data = memoryview(wire.pack(header, payload))
        while data:
            written = os.write(self.fd, data)
            data = data[written:]


def _encode(value: Any, out: wire.PayloadWriter, depth: int = 0) -> Any:
    """A wire description of ``value``; tensors and arrays become raw bytes."""
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        t = torch.Tensor.detach(value).cpu()
        if t.is_complex() or t.numel() > MAX_ELEMENTS or t.layout != torch.strided:
            return {"kind": "object", "type": "Tensor", "repr": f"tensor of shape {tuple(t.shape)}"
                    f" and dtype {t.dtype}, which gradkit does not read back"}
        t = t.contiguous()
        name = str(t.dtype).removeprefix("torch.")
        raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        desc = out.add(name, tuple(t.shape), raw.numpy().tobytes())
        desc["source"] = "tensor" if type(value) is torch.Tensor else type(value).__name__
        return desc
    if isinstance(value, np.ndarray):
        name = {"float16": "float16", "float32": "float32", "float64": "float64",
                "int64": "int64", "int32": "int32", "bool": "bool", "uint8": "uint8",
                "int8": "int8", "int16": "int16"}.get(value.dtype.name)
        if name is None or value.size > MAX_ELEMENTS:
            return {"kind": "object", "type": "ndarray", "repr": f"array of dtype {value.dtype}"}
        desc = out.add(name, value.shape, np.ascontiguousarray(value).tobytes())
        desc["source"] = "ndarray"
        return desc
    if depth < 4 and isinstance(value, dict):
        items = list(value.items())[:MAX_ITEMS]
        return {"kind": "dict", "type": type(value).__name__,
                "items": {str(k): _encode(v, out, depth + 1) for k, v in items}}
    if depth < 4 and isinstance(value, (list, tuple)):
        return {"kind": "list", "type": type(value).__name__,
                "items": [_encode(v, out, depth + 1) for v in value[:MAX_ITEMS]]}
    if value is None or isinstance(value, (bool, int, float)):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 1 << 53:
            value = float(value)
        return {"kind": "scalar", "value": value, "type": type(value).__name__}
    if isinstance(value, str):
        return {"kind": "scalar", "value": value[:200], "type": "str"}
    try:
        text = reprlib.repr(value)
    except BaseException:  # a hostile __repr__
        text = "<unprintable>"
    return {"kind": "object", "type": type(value).__name__, "repr": text[:200]}


def _student_error(exc: BaseException, filename: str) -> dict[str, Any]:
    """The exception, with the traceback trimmed to the student's own frames."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    lines = [f"line {f.lineno}, in {f.name}: {(f.line or '').strip()}" for f in frames]
    try:
        message = str(exc)
    except BaseException:
        message = "<unprintable message>"
    return {"type": type(exc).__name__, "message": message[:1000],
            "traceback": lines[-8:], "line": frames[-1].lineno if frames else None}


def _tensor(desc: dict[str, Any], payload: bytes):
    import torch

    dtype, shape, raw = wire.check_array(desc, payload)
    return torch.frombuffer(bytearray(raw), dtype=getattr(torch, dtype)).reshape(shape).clone() \
        if raw else torch.empty(shape, dtype=getattr(torch, dtype))


def _decode(value: Any, payload: bytes) -> Any:
    if wire.is_array(value):
        return _tensor(value, payload)
    if isinstance(value, dict):
        return {k: _decode(v, payload) for k, v in value.items()}
    return value


class _Capture:
    """Records the tensors a student's functions hold as they return (their intermediates)."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.frames: dict[str, dict[str, Any]] = {}

    def __call__(self, frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "return" and frame.f_code.co_filename == self.filename:
            import numpy as np
            import torch

            found = {name: value for name, value in frame.f_locals.items()
                     if isinstance(value, (torch.Tensor, np.ndarray))}
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
        return f"is a {type(fn).__name__}, not a function"
    try:
        inspect.signature(fn).bind(*range(args))
    except TypeError as exc:
        return f"cannot be called with {args} positional arguments: {exc}"
    except ValueError:
        return None  # builtins without a signature: let the call tell
    return None


def _run_call(call: dict[str, Any], payload: bytes, namespace: dict[str, Any], filename: str
              ) -> tuple[dict[str, Any], bytes]:
    import torch

    out = wire.PayloadWriter()
    kind = call["kind"]
    steps: list[dict[str, Any]] = []
    result: dict[str, Any] = {"type": "call", "id": call["id"], "steps": steps}
    started = time.perf_counter()
    train, predict = namespace.get(FUNCTIONS[0]), namespace.get(FUNCTIONS[1])

    def fresh(name: str):
        value = call["inputs"].get(name)
        return None if value is None else _decode(value, payload)

    try:
        if kind == "predict":
            X, weights = fresh("X"), fresh("weights")
            returned = predict(X, weights)
            steps.append({"returned": _encode(returned, out),
                          "after": {"X": _encode(X, out), "weights": _encode(weights, out)}})
        elif kind == "training":
            X, Y, weights = fresh("X"), fresh("Y"), fresh("weights")
            rows = fresh("rows").tolist()
            checkpoints = set(call["checkpoints"])
            lr = call["learning_rate"]
            for step, row in enumerate(rows, start=1):
                weights = train(X[row : row + 1], Y[row : row + 1], weights, lr)
                if step in checkpoints:
                    steps.append({"step": step, "returned": _encode(weights, out)})
        else:  # step, chain, init
            batches = call["inputs"]["batches"]
            weights = fresh("weights")
            repeats = 2 if call.get("repeat") else 1
            for index, batch in enumerate(batches * repeats if repeats > 1 else batches):
                X, Y = _decode(batch["X"], payload), _decode(batch["Y"], payload)
                given = fresh("weights") if repeats > 1 else weights
                if kind == "init":
                    torch.manual_seed(call["seed"])
                capture = _Capture(filename)
                returned = capture.run(train, X, Y, given, call["learning_rate"])
                steps.append({
                    "returned": _encode(returned, out),
                    "captured": {fn: {k: _encode(v, out) for k, v in names.items()}
                                 for fn, names in capture.frames.items()} if call["capture"]
                    else {},
                    "after": {"X": _encode(X, out), "Y": _encode(Y, out),
                              "weights": _encode(given, out)},
                })
                if kind == "chain" and index + 1 < len(batches):
                    if not isinstance(returned, dict):
                        break
                    weights = {k: (torch.Tensor.detach(v).clone() if isinstance(v, torch.Tensor)
                                   else v) for k, v in returned.items()}
        result["ok"] = True
    except BaseException as exc:  # SystemExit and KeyboardInterrupt are the student's too
        result["ok"] = False
        result["error"] = _student_error(exc, filename)
    result["seconds"] = time.perf_counter() - started
    return result, out.getvalue()


def _module_tensors(namespace: dict[str, Any], out: wire.PayloadWriter) -> dict[str, Any]:
    import torch

    found = {}
    for name, value in list(namespace.items()):
        if isinstance(value, torch.Tensor) and value.numel() <= 4096 and len(found) < 64:
            found[name] = _encode(value, out)
    return found


def main(request: dict[str, Any], payload: bytes, result_fd: int) -> None:
    """Load the submission, run every planned call, send a frame for each; never returns."""
    sender = _Sender(result_fd)
    filename = request["filename"]
    source = request["source"]
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    sys.path.insert(0, request["workdir"])
    sys.path.append(request["shims"])
    module = types.ModuleType("submission")
    module.__file__ = filename
    sys.modules["submission"] = module
    modules_before = set(sys.modules)
    started = time.perf_counter()
    try:
        code = compile(source, filename, "exec")
        exec(code, module.__dict__)
        load: dict[str, Any] = {"type": "load", "ok": True}
    except BaseException as exc:
        load = {"type": "load", "ok": False, "error": _student_error(exc, filename)}
    load["seconds"] = time.perf_counter() - started
    namespace = module.__dict__
    load["functions"] = {
        name: ("missing" if name not in namespace else
               _signature(namespace[name], 4 if name == FUNCTIONS[0] else 2) or "ok")
        for name in FUNCTIONS
    }
    load["new_modules"] = sorted(set(sys.modules) - modules_before)[:500]
    # module-level tensors, so the grader can recognise a forward pass that reads globals
    out = wire.PayloadWriter()
    load["globals"] = _module_tensors(namespace, out)
    sender.send(load, out.getvalue())
    if load["ok"]:
        for call in request["calls"]:
            needed = FUNCTIONS[1] if call["kind"] == "predict" else FUNCTIONS[0]
            if load["functions"][needed] != "ok":
                continue
            header, data = _run_call(call, payload, namespace, filename)
            sender.send(header, data)
    sender.send({"type": "done"})
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
