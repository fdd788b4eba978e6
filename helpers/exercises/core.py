"""What every exercise shares: `Exercise` (check, hint, solution), the registry `EXERCISES`, and the
small functions the checks use to turn a wrong answer into a message that names the mistake."""
from __future__ import annotations

import inspect
import math
from typing import Callable

import numpy as np
import torch


NOT_WRITTEN = "replace `raise NotImplementedError()` with your code, then run the cell again"
NOT_PREDICTED = "put your prediction in place of `...`, then run the cell again"


class Mistake(Exception):
    """What is wrong with an answer, in words; `Exercise.check` turns it into an AssertionError."""


class NotAttempted(Mistake):
    """The stub is untouched: not a wrong answer, nothing tried yet."""


class Exercise:
    """One exercise: `check(answer)` prints a "✓" line, or raises AssertionError that says "○ not attempted"
    (an untouched stub) or "✗" and names the mistake; `hint()`, then `hint(2)`, give help that comes closer
    to the answer; `solution()` prints the reference solution (or the answer, explained)."""

    def __init__(self, name: str, notebook: str, kind: str, title: str, checker: Callable[..., str],
                 hint: str | list[str], solution: Callable | str):
        if kind not in ("code", "predict", "change"):
            raise ValueError(f"kind must be 'code', 'predict' or 'change', got {kind!r}")
        self.name, self.notebook, self.kind, self.title = name, notebook, kind, title
        self._checker, self._solution = checker, solution
        self._hints = [hint] if isinstance(hint, str) else list(hint)

    def __repr__(self) -> str:
        return f"<exercise {self.name} ({self.notebook}, {self.kind}): {self.title}>"

    def check(self, answer, *context) -> None:
        """Print "✓ Correct: ..." or raise AssertionError with what is wrong. `context`: measured data the
        answer depends on (only `gap_with_data` takes some)."""
        __tracebackhide__ = True                     # pytest and IPython show the message, not this frame
        try:
            if answer is Ellipsis or answer is None:
                raise NotAttempted(NOT_WRITTEN if self.kind == "code" else NOT_PREDICTED)
            with torch.random.fork_rng(devices=[]):  # a check must not shift the notebook's random numbers
                message = self._checker(answer, *context)
        except NotAttempted as stub:
            raise AssertionError(f"○ {self.name}: not attempted: {stub}") from None
        except Mistake as mistake:
            raise AssertionError(f"✗ {self.name}: {mistake}\n  (a hint: exercises.{self.name}.hint())") from None
        except TypeError as err:                     # a check called with a missing or extra argument
            raise AssertionError(f"✗ {self.name}: the check was called the wrong way ({err}); call it as in "
                                 f"the exercise's cell") from None
        print(f"✓ Correct: {message}")

    def hint(self, level: int = 1) -> None:
        """Print hint number `level` (1, 2, ...): each comes closer to the answer than the one before."""
        if not isinstance(level, int) or isinstance(level, bool) or level < 1:
            print(f"hint levels are 1 to {len(self._hints)}: exercises.{self.name}.hint(2)")
            return
        text = self._hints[min(level, len(self._hints)) - 1]
        more = (f"  (closer: exercises.{self.name}.hint({level + 1}))" if level < len(self._hints) else
                f"  (the answer: exercises.{self.name}.solution())")
        print(f"Hint {min(level, len(self._hints))}/{len(self._hints)} ({self.name}): {text}{more}")

    def solution(self) -> None:
        if callable(self._solution):
            print(inspect.getsource(self._solution).rstrip())
        else:
            print(f"Solution ({self.name}): {self._solution}")


EXERCISES: dict[str, Exercise] = {}


def _register(*args, **kwargs) -> Exercise:
    ex = Exercise(*args, **kwargs)
    EXERCISES[ex.name] = ex
    return ex


# ------------------------------------------------------------------ shared by the checks

def _call(fn, *args):
    """Run the learner's function; what goes wrong becomes a Mistake that says what happened."""
    if not callable(fn):
        raise Mistake(f"expected your function, got {type(fn).__name__}: pass the function itself, without calling it")
    try:
        out = fn(*args)
    except NotImplementedError:
        raise NotAttempted(NOT_WRITTEN) from None
    except Exception as err:                                     # the learner's bug, reported as a message
        raise Mistake(f"your function raised {type(err).__name__}: {err}") from None
    if out is None:
        raise Mistake("your function returned None: is a `return` missing?")
    return out


def _tensor(out, shape: tuple, what: str) -> torch.Tensor:
    """The learner's output as a float tensor of `shape`, or a Mistake naming the wrong type or shape."""
    if not isinstance(out, torch.Tensor):
        raise Mistake(f"expected {what} as a torch tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise Mistake(f"wrong shape: expected {what} {tuple(shape)}, got {tuple(out.shape)}")
    return out.detach().float()


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=atol, rtol=1e-4, equal_nan=True)


def _compare(out: torch.Tensor, expected: torch.Tensor, mistakes: list[tuple[str, torch.Tensor]], what: str) -> None:
    """Pass if `out` equals `expected`; else name the first typical mistake it equals, or say how far off it is."""
    if _close(out, expected):
        return
    for message, wrong in mistakes:
        if wrong is not None and _close(out, wrong):
            raise Mistake(message)
    if torch.isnan(out).any():
        raise Mistake(f"{what} contains NaN (a division by zero, or a softmax over only -inf?)")
    diff = (out - expected).abs().max().item()
    raise Mistake(f"{what} differs from the course's reference (largest difference {diff:.3g})")


def _number(answer, what: str) -> float:
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if isinstance(answer, (bool, np.bool_)) or not isinstance(answer, (int, float, np.number)):
        raise Mistake(f"expected {what} as a number, got {type(answer).__name__} {answer!r}")
    try:
        value = float(answer)
    except OverflowError:
        raise Mistake(f"expected {what} as a finite number, got an integer too large for a float") from None
    if not math.isfinite(value):
        raise Mistake(f"expected {what} as a finite number, got {value}")
    return value


def _share(answer) -> float:
    share = _number(answer, "a share")
    if not 0 <= share <= 1:
        raise Mistake(f"give a share between 0 and 1 (0.25 for 25%), got {share:g}")
    return share


def _letter(answer, choices: str) -> str:
    if not isinstance(answer, str):
        raise Mistake(f"answer with one of the letters {', '.join(choices)} as a string, like \"{choices[0]}\"; "
                      f"got {type(answer).__name__} {answer!r}")
    letter = answer.strip().lower().strip("()")
    if len(letter) != 1 or letter not in choices:          # "" and "ab" are substrings of "abc" too
        raise Mistake(f"answer with one of the letters {', '.join(choices)}; got {answer!r}")
    return letter


def _choice(answer, right: str, why: dict[str, str]) -> str:
    """Multiple choice: the right letter -> why[right]; another -> a Mistake with why[that letter]."""
    letter = _letter(answer, "".join(why))
    if letter != right:
        raise Mistake(f"not ({letter}): {why[letter]}")
    return f"({right}) {why[right]}"


def _loss_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(6, 6, generator=g) * 2 - 1 + torch.eye(6) * 0.5   # cosines, matches a little higher
    return scores, torch.tensor(math.log(1 / 0.07))


def _check_loss(fn, reference, mistakes: Callable[[torch.Tensor, torch.Tensor], list], seed: int) -> None:
    """Value and gradient of a loss over (B, B) scores and a log-temperature against the course's function."""
    _check_loss_on(fn, reference, mistakes, [_loss_inputs(seed)])


# ------------------------------------------------------------------ losses on inputs of the check's own (05, 08)

def _check_loss_on(fn, reference, mistakes: Callable[[torch.Tensor, torch.Tensor], list],
                   inputs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """`_check_loss` on each (scores, logit_scale) of `inputs` in turn, for mistakes that only some inputs expose."""
    for scores, scale in inputs:
        s, ls = scores.clone().requires_grad_(), scale.clone().requires_grad_()
        out = _call(fn, s, ls)
        if not isinstance(out, torch.Tensor):
            raise Mistake(f"return the loss as a tensor (training calls .backward() on it), got {type(out).__name__}")
        if out.dim() != 0:
            raise Mistake(f"expected one number, a scalar tensor, got shape {tuple(out.shape)} (average over the batch)")
        expected = reference(scores, scale)
        if not _close(out.detach(), expected):                  # the typical mistakes computed only when needed
            _compare(out.detach(), expected, mistakes(scores, scale), "the loss")
        if not out.requires_grad:
            raise Mistake("the loss is cut from the graph (.item(), .detach() or numpy): no gradient can reach the model")
        out.backward()
        rs, rls = scores.clone().requires_grad_(), scale.clone().requires_grad_()
        reference(rs, rls).backward()
        if ls.grad is None:
            raise Mistake("no gradient reaches logit_scale: the temperature would never be learned")
        if s.grad is None:
            raise Mistake("no gradient reaches the scores: the model would never learn")
        if not (_close(s.grad, rs.grad) and _close(ls.grad, rls.grad)):
            raise Mistake("the right value with the wrong gradient (is part of the computation detached?)")
