"""With the precedence fix of issue 10 reverted, the shape-checked property tests fail within the default profile.

Before issue 10 the NumPy printer appended an index or ``.T`` to printed *text* and decided the brackets by
looking at that text: ``operand()`` bracketed unless the text was a name or ended in ``)`` (so
``t0**(3/2)`` got ``[:, None]`` on its exponent), and the matrix-product printer appended
``[:, :, None]`` with no brackets at all (so ``2*t0 - 2*y[:, :, None]`` indexed ``y`` alone). These
printers put each of those rules back into the one place where today's printer appends a postfix
(:meth:`NumPyBatchPrinter.postfix`), and the tests assert that the random-network properties, with the
default profile's number of examples, derandomised, find a failure. If a change to the strategies made them
blind to such a printer again, these tests would say so.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings

import symbackprop.codegen
from network_checks import check_against_torch, check_finite_differences, check_forward_pass
from strategies import tensor_graphs
from symbackprop.codeprint import Code, NumPyBatchPrinter


class TextBracketingPrinter(NumPyBatchPrinter):
    """The rule of the old ``operand()``: no brackets before a postfix if the text is a name or ends in ``)``."""

    def postfix(self, code: Code, suffix: str) -> Code:
        text = str(code)
        bare = text.isidentifier() or (text.endswith(")") and not text.startswith("("))
        return Code((text if bare else f"({text})") + suffix)


class UnbracketedPrinter(NumPyBatchPrinter):
    """The rule of the old matrix-product printer: the postfix appended to the text as it is."""

    def postfix(self, code: Code, suffix: str) -> Code:
        return Code(code + suffix)


#: the examples one numeric property test runs in the default profile (test_properties.py)
DEFAULT_EXAMPLES = max(100, settings.get_profile("default").max_examples)
#: what a misbracketed program raises: a shape check or a wrong value (AssertionError), an index on a float
#: (TypeError), a broadcast that fails (ValueError), an index on a NumPy scalar (IndexError), an index on a
#: number literal (SyntaxError)
FAILURES = (AssertionError, TypeError, ValueError, IndexError, SyntaxError)


@pytest.mark.filterwarnings("ignore::SyntaxWarning")  # the broken printers write t**(3/2)[:, None]
@pytest.mark.parametrize("printer", [TextBracketingPrinter, UnbracketedPrinter], ids=["text-based", "unbracketed"])
@pytest.mark.parametrize("check", [check_forward_pass, check_finite_differences, check_against_torch],
                         ids=["forward", "finite-differences", "torch"])
def test_the_tensor_properties_fail_with_the_text_based_bracketing_of_before_issue_10(monkeypatch, printer, check):
    monkeypatch.setattr(symbackprop.codegen, "NumPyBatchPrinter", printer)

    @settings(max_examples=DEFAULT_EXAMPLES, derandomize=True, database=None, phases=[Phase.generate],
              deadline=None, suppress_health_check=list(HealthCheck))
    @given(spec=tensor_graphs())
    def tensor_property(spec):
        check(spec)

    with pytest.raises(FAILURES) as failure:
        tensor_property()
    print(f"{printer.__name__}, {check.__name__}: {failure.type.__name__}: {str(failure.value)[:300]}")
