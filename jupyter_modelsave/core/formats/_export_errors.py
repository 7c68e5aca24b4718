"""Reading torch.export's errors: which kind of failure, and torch's own suggested fixes.

torch.export explains a failure over several lines; the first is rarely enough. A range
refinement ("Constraints violated (seq)!") comes with ``Suggested fixes:`` such as
``seq = Dim('seq', max=64)`` (BERT's position embeddings cap the sequence length); a Python
``if`` on tensor values is a data-dependent guard. Only the latter is helped by replacing control
flow with ``torch.where``/``torch.cond``.
"""

from __future__ import annotations

from .._capture import first_line, strip_ansi

_DATA_DEPENDENT = ("GuardOnDataDependentSymNode", "data-dependent", "data dependent")


def is_range_refinement(err: BaseException) -> bool:
    """torch.export refused named dims because the model narrows their range (or relates them)."""
    return "Constraints violated" in str(err)


def suggested_fixes(err: BaseException) -> list[str]:
    """torch's ``Suggested fixes:`` lines (``seq = Dim('seq', max=64)``), stripped."""
    lines = strip_ansi(str(err)).splitlines()
    for index, line in enumerate(lines):
        if line.strip() == "Suggested fixes:":
            fixes = []
            for fix in lines[index + 1 :]:
                if not fix.startswith((" ", "\t")) or not fix.strip():
                    break
                fixes.append(fix.strip())
            return fixes
    return []


def fixed_axes(err: BaseException) -> dict[str, int]:
    """Axes the model fixes to one size: suggested fixes of the form ``batch = 2``."""
    pairs = (fix.partition(" = ") for fix in suggested_fixes(err))
    return {name: int(value) for name, _, value in pairs if value.isdigit()}


def is_unsaved_namedtuple(err: BaseException) -> bool:
    """torch.export.save met a namedtuple it has no serialized name for."""
    return "namedtuple" in str(err) and "serializ" in str(err)


def is_data_dependent(err: BaseException) -> bool:
    """A Python ``if``/``int()`` on a tensor's value stopped the trace."""
    text = f"{type(err).__name__}: {err}"
    return any(marker in text for marker in _DATA_DEPENDENT)


def describe(err: BaseException, what: str) -> str:
    """``what failed: Type: first line`` + torch's suggested fixes + the hint that applies."""
    message = f"{what} failed: {type(err).__name__}: {first_line(err)}"
    fixes = suggested_fixes(err)
    if fixes:
        message += f" torch suggests: {'; '.join(fixes)}."
    if is_data_dependent(err):
        message += (
            " A Python `if` (or int()/bool()) on tensor values cannot be traced: replace it with "
            "torch.where/torch.cond."
        )
    elif fixed := fixed_axes(err):
        sizes = ", ".join(f"{axis} to {size}" for axis, size in fixed.items())
        message += (
            f" The model, or the way torch traces one of its layers (a reshape to a constant "
            f"size, nn.LSTM's sequence), fixes {sizes}: leave {' and '.join(fixed)} out of "
            "dynamic_axes, or use format='onnx' or 'torchscript'."
        )
    elif is_unsaved_namedtuple(err):
        message += (
            " torch.export.save stores a namedtuple in the program's inputs or outputs only when "
            "it is registered, and every process that loads the .pt2 would need the same "
            "registration: return a tuple or a dict from forward(), or use format='onnx' or "
            "'torchscript'."
        )
    elif is_range_refinement(err):
        message += (
            " The model limits the range of a dynamic axis (e.g. a maximum sequence length) or "
            "ties two axes together: give such inputs the same axis name, or leave the axis static."
        )
    else:
        message += " Check that forward() runs on the example inputs."
    return message
