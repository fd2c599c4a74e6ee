"""Write ``loss_and_grad`` as blocked, in-place code: the batch in cache-sized blocks of samples.

The whole-array form (``generate_module(..., blocked=False)``) computes every value for all N samples
at once: at N = 1e6 each temporary is 8 MB, streamed through memory and allocated anew. The blocked
form runs the same assignments on blocks of at most ``BLOCK`` samples (a module constant) and writes
each per-sample value in place into a buffer allocated once per call (:mod:`symbackprop.inplace`), so
the working set of one block stays in the CPU's cache:

* values that are the same for every sample (a parameter's square, ``W.T``) are computed once, before
  the blocks;
* the loss and each gradient are sums over the samples, added up block by block (each gradient line
  adds its block's sum) and divided by N after the last block; or, where that is cheaper (a net whose
  gradients have many more values than its output error has per sample, such as 784-128-10), with 1/N
  folded into the loss's adjoint seed (``dL_dz2 = (p - y)*_inv_N``), so that the sums are the means
  (:meth:`BlockedFunction.fold_mean`);
* a value read only by a function that can take its argument negated (the seed's z, read only by
  sigmoid(z)) is computed negated where the sign costs nothing (``np.multiply(-w, x, out=minus_z)``), and
  the function skips its own negation: the seed's block makes 12 passes over its samples, as the best
  hand-written NumPy does;
* a batch of at most ``BLOCK`` samples is one block, so small batches run the whole batch at once:
  one GEMM per layer, as in the whole-array form.

Every buffer is a local variable of the call: a module called from two threads at once gives each call
its own (no module-level mutable state). The loss and gradients equal the whole-array form's to float
rounding, not bit for bit: sums are added in another order (block by block, ``einsum``) and products
multiplied in another order. tests/test_blocked.py allows ``|blocked - whole| <= 1e-12 * max(1, |whole|)``
per element; on 550 random networks (150 scalar, 400 tensor; batches of 3, 5, 10 and 12 samples in
blocks of 5) the largest difference was 2.4e-15.

``forward`` and ``trace`` stay whole-array: they return every value for every sample anyway.
"""
from __future__ import annotations

from math import prod

import sympy as sp

from .codegen import _comment
from .codeprint import Code
from .functions import Elementwise
from .inplace import BufferPool, InPlaceWriter
from .program import batch_mean
from .steps import Adjoint


#: Values per buffer of one block (samples per block times the widest per-sample size): 65,536 float64
#: values are 512 kB. Measured on the seed at N = 1e6 (benchmarks/README.md, "Blocked code"), where one
#: sample is one value: blocks of 8,192 samples ran 0.77x the hand-written NumPy, 16,384 0.68x, 32,768
#: 0.59x, 65,536 0.57x, 131,072 0.56x (one run with tight spreads, 1 BLAS thread; 1,024 ran 1.1x-2.6x in
#: noisier runs: Python's ~15 lines per block dominate). Larger blocks pay Python's cost less often, and
#: the seed's buffers still sit in the 32 MB L3 cache; beyond 512 kB per buffer the gain is gone, so a
#: wider model gets fewer samples per block (down to MIN_BLOCK).
BLOCK_VALUES = 65536
#: Samples per block at least: a mini-batch of up to 2,048 samples is always a single block (whole-batch
#: matrix products, as in the whole-array form), and a wide model's GEMMs keep at least 2,048 rows.
MIN_BLOCK = 2048

#: Folding 1/N into the loss's adjoint seed (see :meth:`BlockedFunction.fold_mean`) is chosen when it costs
#: fewer values than dividing every gradient by N, counted for a mini-batch of this many samples: the seed
#: (two scalar gradients, one value per sample) keeps the division (folding would add a pass over its
#: 1e6 samples); 784-128-10 (100,480 gradient values against 10 per sample) and 8 layers of width 32
#: (8,448 values in 16 divisions, against 32 per sample) fold.
FOLD_SAMPLES = 256

#: The name of 1/N in blocked code that folds it into the adjoint seed.
INVERSE_N = sp.Symbol("_inv_N", positive=True)

#: The type of every buffer: the generated module's ``DTYPE`` constant (float64, or float32 on request).
BUFFER_DTYPE = "DTYPE"


#: The helper that adds up the blocks' sums.
ADD_BLOCK_HELPER = '''\
def _add_block(total, block_sum):
    """The sum over the blocks so far (None before the first) plus one block's sum, a new array of the
    block's own: the first block's sum is kept as it is (no array of zeros to add it to, no extra pass)."""
    if total is None:
        return block_sum
    total += block_sum
    return total
'''


def default_block(program) -> int:
    """Samples per block for ``program``: :data:`BLOCK_VALUES` divided by the size of one sample of its
    widest input or per-sample value, rounded down to a power of two, at least :data:`MIN_BLOCK` (the
    seed: 65,536; examples/iris.toml: 4,096; 784-128-10: 2,048)."""
    widest = max([prod(shape) for symbol, shape in program.shapes.items() if symbol in program.batched]
                 + [prod(q.canonical_shape) for q in program.inputs], default=1)
    return max(MIN_BLOCK, 1 << ((BLOCK_VALUES // widest).bit_length() - 1))


class BlockedFunction:
    """The lines of a blocked ``loss_and_grad`` for the program of a :class:`~symbackprop.codegen.ModuleWriter`."""

    def __init__(self, writer):
        self.writer = writer
        self.program = writer.program
        self.printer = writer.printer
        self.names = writer.names
        self.pool = BufferPool()
        self.negated_by: dict = {}  # a value computed negated -> the name of the function that reads it

    def lines(self) -> list[str]:
        p, w = self.program, self.writer
        i, ii = w.indent, w.indent * 2
        batched = p.batched
        loss = p.loss
        fixed = [a for a in p.assignments if not isinstance(a.expr, batch_mean) and a.target not in batched]
        body = [a for a in p.assignments if a not in fixed]
        folded = self.fold_mean(body)
        self.folded = folded is not None
        if self.folded:
            body = folded
            self.printer.shapes = {**self.printer.shapes, INVERSE_N: ()}
            self.printer._shape_memo = {}
            self.names[INVERSE_N] = INVERSE_N.name
        self.printer.batch_size, self.printer.batch_reduce = "_n", "np.add.reduce"
        try:
            loop = self.loop_body(body, ii)
        finally:
            self.printer.batch_size, self.printer.batch_reduce = "N", "np.sum"
        head = ["def loss_and_grad(params, data):",
                f'{i}"""Mean loss over the batch and its gradient for every parameter (in its shape).',
                "",
                f"{i}Computed in blocks of at most BLOCK samples, each value written in place into a buffer",
                f'{i}allocated once per call; the loss and the gradients are sums added up block by block."""',
                *w.unpack(blocked=True)]
        if fixed:
            head.append(f"{i}# the same for every sample: computed once, before the blocks")
            for a in fixed:
                head += w.assign(a)
        if self.folded:
            head.append(f"{i}# the mean's derivative: 1/N multiplies the loss's adjoint seed (the lines marked \"times 1/N\"),")
            head.append(f"{i}# so that every adjoint and gradient sum is already divided by N (no division per gradient)")
            head.append(f"{i}{INVERSE_N.name} = 1/N")
        head.append(f"{i}# buffers for one block of samples, allocated once per call (so two threads calling this")
        head.append(f"{i}# function at once never share one); values whose lifetimes do not overlap share a buffer")
        head.append(f"{i}_rows = min(N, BLOCK)")
        for name, shape in zip(self.pool.names, self.pool.shapes):
            rows = "(" + ", ".join(["_rows", *map(str, shape)]) + ")" if shape else "_rows"
            head.append(f"{i}{name} = np.empty({rows}, dtype={BUFFER_DTYPE})")
        head.append(f"{i}# sums over the samples, added up block by block (a gradient's: None before the first)")
        if loss in batched:
            head.append(f"{i}_loss = 0.0")
        for a in self.accumulated(body):
            head.append(f"{i}{self.names[a.target]} = None")
        head += [f"{i}for _start in range(0, N, _rows):",
                 f"{ii}_stop = min(_start + _rows, N)",
                 f"{ii}_n = _stop - _start"]
        if self.pool.names:
            head.append(f"{ii}if _n < _rows:  # the last block is shorter: the first _n rows of each buffer")
            head += [f"{ii}{w.indent}{name} = {name}[:_n]" for name in self.pool.names]
        for q in p.inputs:
            head.append(f'{ii}{q.name} = arrays["{q.name}"][_start:_stop]')
        tail = [f"{i}loss = float(_loss/N)" if loss in batched else f"{i}loss = float({self.names[loss]})"]
        tail += self.means(body)
        return head + loop + tail + w.return_lines()

    def fold_mean(self, body) -> list | None:
        """``body`` with 1/N folded into the loss's adjoint seed, or None where that is not both right and cheaper.

        Every adjoint is linear in the loss's direct partial derivatives (dL/da = a - y for the seed): each
        term of an adjoint that holds no earlier adjoint is such a partial, and multiplying exactly those by
        1/N makes every adjoint, and so every gradient's sum over the samples, the mean's. The loss itself
        and the values it shares with the adjoints (``t0 = a - y``) stay as they are: the 1/N goes on the
        adjoint's line (``dL_da = t0*_inv_N``). A gradient's per-sample term without an adjoint (a parameter
        the loss reads directly) is multiplied by 1/N too; its part that does not vary is added once, as before.

        Not folded (the gradients are divided by N after the blocks, as before) where a step could mix
        scaled and unscaled values: an adjoint that does not vary over the batch (``dL/dr = lam`` for a
        regulariser of the parameters) or of a value that does not, or a sum inside an expression mixing
        terms with and without adjoints; nor where dividing the gradients is cheaper (FOLD_SAMPLES)."""
        p = self.program
        node = {q.name: q.symbol for q in p.nodes}
        derived: set = set()
        out = []
        seed_values = gradient_values = 0
        for a in body:
            mean = isinstance(a.expr, batch_mean)
            value = a.expr.args[0] if mean else a.expr
            if isinstance(a.target, Adjoint) and not mean:
                if a.target not in p.batched or node.get(a.target.of) not in p.batched:
                    return None
                terms = sp.Add.make_args(value)
                if any(self.mixes(t, derived) for t in terms):
                    return None
                scaled = [t for t in terms if not (t.free_symbols & derived)]
                seed_values += sum(FOLD_SAMPLES * prod(self.printer.shape(t)) for t in scaled)
                if scaled:
                    value = sp.Add(*[t for t in terms if t.free_symbols & derived]) + sp.Add(*scaled) * INVERSE_N
                    comment = a.comment + "   (times 1/N: the mean's derivative)" if a.comment else a.comment
                    a = type(a)(a.target, value, a.section, comment)
                derived.add(a.target)
            elif mean:
                terms = sp.Add.make_args(value)
                summed = [t for t in terms if self.printer.batched(t)]
                if any(self.mixes(t, derived) for t in terms) or any(
                        t.free_symbols & derived for t in terms if not self.printer.batched(t)):
                    return None
                if summed:
                    gradient_values += prod(self.writer.shapes[a.target])
                    unscaled = [t for t in summed if not (t.free_symbols & derived)]
                    if unscaled:
                        value = sp.Add(*[t for t in terms if t not in unscaled]) + sp.Add(*unscaled) * INVERSE_N
                        a = type(a)(a.target, batch_mean(value), a.section, a.comment)
            elif a.expr.free_symbols & derived:
                if self.mixes(a.expr, derived):
                    return None
                derived.add(a.target)
            out.append(a)
        if not derived or seed_values >= gradient_values:
            return None
        return out

    @staticmethod
    def mixes(expr, derived: set) -> bool:
        """Whether a sum inside ``expr`` adds terms with an adjoint (``derived``) to terms without."""
        for sub in sp.preorder_traversal(expr):
            if isinstance(sub, sp.Add):
                has = [bool(t.free_symbols & derived) for t in sub.args]
                if any(has) and not all(has):
                    return True
        return False

    def accumulated(self, body) -> list:
        """The gradients with a per-sample part: summed block by block."""
        return [a for a in body if isinstance(a.expr, batch_mean) and self.summed_terms(a)]

    def summed_terms(self, a) -> list:
        return [t for t in sp.Add.make_args(a.expr.args[0]) if self.printer.batched(t)]

    def loop_body(self, body, indent: str) -> list[str]:
        """The lines of one block: each per-sample value in place, each gradient's block sum added."""
        p, w = self.program, self.writer
        in_place = InPlaceWriter(self.printer, self.pool, indent, w.check_shapes)
        last_use = self.last_uses(body)
        owner: dict = {}  # symbol -> the buffer it was written into (an alias has none: see last_uses)
        released_at: dict[int, list] = {}
        for s, k in last_use.items():
            released_at.setdefault(k, []).append(s)
        negated = self.negated_arguments(body, last_use)
        lines = [f"{indent}# forward pass"]
        for k, a in enumerate(body):
            if k and body[k - 1].section == "forward" and a.section != "forward":
                lines.append(f"{indent}# backward pass: adjoints dL/dv of this block's samples, from the loss back")
            comment = _comment(a.comment, indent) if a.comment else []
            if a.target in negated or (isinstance(a.expr, Elementwise) and a.expr.args[0] in negated):
                lines += self.negated_line(a, negated, in_place, owner, indent)
            elif isinstance(a.expr, batch_mean):
                lines += self.block_sum(a, indent, comment)
            elif a.target == p.loss and last_use[a.target] == k and all(
                    self.printer.batched(t) for t in sp.Add.make_args(a.expr)):
                # nothing reads the per-sample loss but its sum: summed straight from its expression
                terms = list(sp.Add.make_args(a.expr))
                lines += [f"{indent}# the loss {self.names[p.loss]}, summed over the block",
                          f"{indent}_loss += {self.printer.join_terms(terms, self.printer.batch_sum)}"]
            else:
                target = self.names[a.target]
                code, buffer, scratch = in_place.assign(target, a.expr)
                lines += comment + code
                lines += self.check(target, a.target, indent)
                for b in scratch:
                    self.pool.give_back(b)
                if buffer is not None:
                    owner[a.target] = buffer
                if a.target == p.loss:  # read later too: computed, then summed
                    lines.append(f"{indent}_loss += np.sum({target})")
            for s in released_at.get(k, []):  # after the line: an operand never shares the result's buffer
                if s in owner:
                    self.pool.give_back(owner.pop(s))
        return lines

    def negated_arguments(self, body, last_use: dict) -> dict:
        """Symbol -> the name of its negation, for each value read only as the argument of a function with a
        ``numpy_into_negative`` form (the seed's z, read only by sigmoid(z)) whose negation is written in
        place in no more lines than itself (-w*x - b: the sign on the scalar w). The value is then computed
        negated, and the function reads it so: the pass that negates it inside the function is saved."""
        taken = set(self.names.values())
        readers: dict = {}
        for a in body:
            for s in a.expr.free_symbols:
                readers[s] = readers.get(s, 0) + 1
        negated = {}
        for k, a in enumerate(body):
            j = last_use.get(a.target, k)
            user = body[j].expr
            if j == k or readers.get(a.target) != 1 or a.target == self.program.loss or not (
                    isinstance(user, Elementwise) and user.numpy_into_negative and user.args[0] == a.target):
                continue
            trial = InPlaceWriter(self.printer, BufferPool(), "")
            if not trial.in_place(a.expr) or len(trial.assign("v", -a.expr)[0]) > len(trial.assign("v", a.expr)[0]):
                continue
            name = "minus_" + self.names[a.target]
            while name in taken:
                name += "_"
            taken.add(name)
            negated[a.target] = name
            self.negated_by[a.target] = type(user).__name__
        return negated

    def negated_line(self, a, negated: dict, in_place: InPlaceWriter, owner: dict, indent: str) -> list[str]:
        """The lines of a value computed negated (``minus_z``), or of the function that reads it so."""
        if a.target in negated:  # -z into z's buffer
            name = negated[a.target]
            code, buffer, scratch = in_place.assign(name, -a.expr)
            for b in scratch:
                self.pool.give_back(b)
            owner[a.target] = buffer
            z = self.names[a.target]
            f = self.negated_by[a.target]
            return [f"{indent}# -{z}: only {f}({z}) reads {z}, and it takes -{z} (one pass fewer than negating {z} there;",
                    f"{indent}# the minus sign costs nothing here)"] \
                + code + self.check(name, a.target, indent)
        target, function = self.names[a.target], a.expr
        buffer = self.pool.take(self.printer.shape(function))
        owner[a.target] = buffer
        self.printer.helper("_" + type(function).__name__ + "_of_negative_into")
        return [f"{indent}{target} = {buffer}",
                indent + function.numpy_into_negative.format(minus_x=negated[function.args[0]], out=target)
                ] + self.check(target, a.target, indent)

    def last_uses(self, body) -> dict:
        """Symbol -> the index of the last assignment of the block that reads it (or assigns it, if none)."""
        last: dict = {}
        for k, a in enumerate(body):
            last.setdefault(a.target, k)
            for s in a.expr.free_symbols:
                if s in last:
                    last[s] = k
        # an alias (dL_da = t0) or a value the printer writes as a new expression, which may be a view of its
        # operands (t0 = h2[:, 0:5], W.T) or the operand itself (sum_(t0) of a per-sample scalar prints as t0),
        # keeps its sources' buffers alive as long as itself: otherwise a later value could take the buffer
        # and overwrite what the view shows (bug 21 in docs/testing.md)
        viewer = InPlaceWriter(self.printer, BufferPool(), "")
        for a in reversed(body):
            if isinstance(a.expr, batch_mean) or a.target not in last:
                continue
            if a.expr.is_Symbol or not viewer.in_place(a.expr):
                for s in a.expr.free_symbols:
                    if s in last:
                        last[s] = max(last[s], last[a.target])
        return last

    def block_sum(self, a, indent: str, comment: list[str]) -> list[str]:
        """``dL_dw += <the block's sum>`` for a gradient with a per-sample part."""
        summed = self.summed_terms(a)
        if not summed:
            return []
        total = self.printer.join_terms(summed, self.printer.batch_sum)
        self.printer.helper("_add_block")
        name = self.names[a.target]
        return [line.replace("(mean over the batch)", "(summed over the block)") for line in comment] + [
            f"{indent}{name} = _add_block({name}, {total})"]

    def means(self, body) -> list[str]:
        """After the last block: each gradient as the mean of its sum, plus its part that does not vary."""
        w, i = self.writer, self.writer.indent
        lines = [f"{i}# the means over the batch" + (" (the sums are the means: 1/N was folded in)" if self.folded else "")]
        summed = {a.target for a in self.accumulated(body)}
        for a in body:
            if not isinstance(a.expr, batch_mean):
                continue
            name = self.names[a.target]
            constant = [t for t in sp.Add.make_args(a.expr.args[0]) if not self.printer.batched(t)]
            if a.target not in summed:  # no per-sample part: as in the whole-array form
                lines += w.assign(a)
                continue
            if not self.folded:
                lines.append(f"{i}{name} /= N")
            if constant and sp.Add(*constant) != 0:
                fixed = self.printer._print(sp.Add(*constant))
                lines.append(f"{i}{name} = {self.printer.binary(fixed, '+', Code(name))}")
            lines += w.shape_check(name, w.shapes[a.target], False)
        return lines

    def check(self, name: str, symbol, indent: str) -> list[str]:
        """The shape check of a value of one block: (_n, *shape)."""
        if not self.writer.check_shapes:
            return []
        return [f'{indent}_check_shape("{name}", {name}, {self.writer.shapes[symbol]!r}, _n)']
