"""A float32 SIMD vector type for Numba, lowered to LLVM ``<LANES x float>``: one register.

LANES is 16 where Numba compiles for AVX-512 and 8 elsewhere (AVX2): fixed per process from the
same CPU features Numba's code generator (and its cache key) uses, so the kernels built on it keep
their accumulators in registers either way. Only what the kernels need: loads and stores of LANES
consecutive floats (a lane count ``n`` masks the rest: masked lanes are neither read nor written, so
a row's tail never touches memory past its end), broadcasts, fused multiply-add, add, max, lane
shuffles and a horizontal sum. Addresses are raw float32 pointers (``data_ptr``) plus an element
offset; callers keep the arrays alive and in bounds.
"""
from __future__ import annotations

from llvmlite import binding, ir
from numba import types
from numba.core import config as numba_config
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

def _compiles_for_avx512() -> bool:
    features = numba_config.CPU_FEATURES  # NUMBA_CPU_FEATURES when set, else the host's
    if features:
        return "+avx512f" in features.split(",")
    return bool(binding.get_host_cpu_features().get("avx512f", False))


LANES = 16 if _compiles_for_avx512() else 8
_V = f"v{LANES}f32"  # the LLVM intrinsics' type suffix
_VEC = ir.VectorType(ir.FloatType(), LANES)
_MASK = ir.VectorType(ir.IntType(1), LANES)
_I32 = ir.IntType(32)
f32_ptr = types.CPointer(types.float32)


class FloatVecType(types.Type):
    """LANES float32 lanes in one register."""
    def __init__(self) -> None:
        super().__init__(name=f"f32x{LANES}")


fvec = FloatVecType()


@register_model(FloatVecType)
class _FloatVecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


def _address(builder, ptr, offset):
    return builder.bitcast(builder.gep(ptr, [offset]), _VEC.as_pointer())


def _lanes_below(builder, n):
    """<LANES x i1>: lane index < n."""
    i64x = ir.VectorType(ir.IntType(64), LANES)
    splat = builder.insert_element(ir.Constant(i64x, ir.Undefined), n, ir.Constant(_I32, 0))
    splat = builder.shuffle_vector(splat, splat, ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))
    return builder.icmp_signed("<", ir.Constant(i64x, list(range(LANES))), splat)


def _intrinsic_fn(builder, name, ret, args):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


# for vector intrinsics built beside their scalar twins elsewhere (act_math.vexp_neg)
VEC, VEC_SUFFIX, vec_intrinsic_fn = _VEC, _V, _intrinsic_fn


@intrinsic
def data_ptr(typingctx, arr):
    """The float32 pointer to an array's first element."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.float32):
        return None

    def codegen(context, builder, sig, args):
        return context.make_array(sig.args[0])(context, builder, args[0]).data
    return f32_ptr(arr), codegen


@intrinsic
def vload(typingctx, ptr, offset):
    """ptr[offset : offset + LANES]."""
    def codegen(context, builder, sig, args):
        return builder.load(_address(builder, args[0], args[1]), align=4)
    return fvec(ptr, offset), codegen


@intrinsic
def vload_n(typingctx, ptr, offset, n):
    """ptr[offset : offset + n] in the first n lanes (n may be <= 0 or >= LANES), zeros elsewhere."""
    def codegen(context, builder, sig, args):
        fn = _intrinsic_fn(builder, f"llvm.masked.load.{_V}.p0", _VEC, [_VEC.as_pointer(), _I32, _MASK, _VEC])
        mask = _lanes_below(builder, builder.sext(args[2], ir.IntType(64)))
        return builder.call(fn, [_address(builder, args[0], args[1]), ir.Constant(_I32, 4), mask,
                                 ir.Constant(_VEC, [0.0] * LANES)])
    return fvec(ptr, offset, n), codegen


@intrinsic
def vstore_n(typingctx, ptr, offset, v, n):
    """ptr[offset : offset + n] = the first n lanes of v; nothing else is written."""
    def codegen(context, builder, sig, args):
        fn = _intrinsic_fn(builder, f"llvm.masked.store.{_V}.p0", ir.VoidType(), [_VEC, _VEC.as_pointer(), _I32, _MASK])
        mask = _lanes_below(builder, builder.sext(args[3], ir.IntType(64)))
        builder.call(fn, [args[2], _address(builder, args[0], args[1]), ir.Constant(_I32, 4), mask])
        return context.get_dummy_value()
    return types.void(ptr, offset, v, n), codegen


@intrinsic
def vsplat(typingctx, ptr, offset):
    """ptr[offset] in every lane."""
    def codegen(context, builder, sig, args):
        x = builder.load(builder.gep(args[0], [args[1]]), align=4)
        v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), x, ir.Constant(_I32, 0))
        return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))
    return fvec(ptr, offset), codegen


@intrinsic
def prefetch(typingctx, ptr, offset, write):
    """A hint to bring the cache line of ptr[offset] in (``write``: for writing, a prefetchw);
    never faults, so offsets past an array's end are harmless."""
    def codegen(context, builder, sig, args):
        i8p = ir.IntType(8).as_pointer()
        fn = _intrinsic_fn(builder, "llvm.prefetch.p0i8", ir.VoidType(), [i8p, _I32, _I32, _I32])
        addr = builder.bitcast(builder.gep(args[0], [args[1]]), i8p)
        rw = ir.Constant(_I32, 1 if write.literal_value else 0)
        builder.call(fn, [addr, rw, ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        return context.get_dummy_value()
    if not isinstance(write, types.BooleanLiteral):
        return None
    return types.none(ptr, offset, write), codegen


@intrinsic
def vzero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_VEC, [0.0] * LANES)
    return fvec(), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c, fused (one rounding)."""
    def codegen(context, builder, sig, args):
        return builder.call(_intrinsic_fn(builder, f"llvm.fma.{_V}", _VEC, [_VEC] * 3), args)
    return fvec(fvec, fvec, fvec), codegen


@intrinsic
def vadd(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return fvec(fvec, fvec), codegen


@intrinsic
def vmax(typingctx, a, b):
    """Lane-wise max (for ReLU: max(x, 0))."""
    def codegen(context, builder, sig, args):
        return builder.call(_intrinsic_fn(builder, f"llvm.maxnum.{_V}", _VEC, [_VEC] * 2), args)
    return fvec(fvec, fvec), codegen


@intrinsic
def vwhere_positive(typingctx, cond, a):
    """a where cond > 0, else 0 (ReLU's derivative, written in terms of its output)."""
    def codegen(context, builder, sig, args):
        positive = builder.fcmp_ordered(">", args[0], ir.Constant(_VEC, [0.0] * LANES))
        return builder.select(positive, args[1], ir.Constant(_VEC, [0.0] * LANES))
    return fvec(fvec, fvec), codegen


@intrinsic
def vsum(typingctx, v):
    """The sum of the lanes (a tree reduction)."""
    def codegen(context, builder, sig, args):
        fn = _intrinsic_fn(builder, f"llvm.vector.reduce.fadd.{_V}", ir.FloatType(), [ir.FloatType(), _VEC])
        return builder.call(fn, [ir.Constant(ir.FloatType(), 0.0), args[0]], fastmath=("reassoc",))
    return types.float32(fvec), codegen


@intrinsic
def vhmax(typingctx, v):
    """The largest lane."""
    def codegen(context, builder, sig, args):
        fn = _intrinsic_fn(builder, f"llvm.vector.reduce.fmax.{_V}", ir.FloatType(), [_VEC])
        return builder.call(fn, [args[0]])
    return types.float32(fvec), codegen


@intrinsic
def vsplat_value(typingctx, x):
    """A float32 value in every lane."""
    def codegen(context, builder, sig, args):
        v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), args[0], ir.Constant(_I32, 0))
        return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))
    return fvec(types.float32), codegen


def _shuffle2(builder, a, b, lanes):
    """Lanes of a ++ b (indices < LANES from a, the rest from b)."""
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, LANES), lanes))


@intrinsic
def veven(typingctx, a, b):
    """Lanes 0, 2, 4, ... of a ++ b (the left column of each 2-wide window)."""
    def codegen(context, builder, sig, args):
        return _shuffle2(builder, args[0], args[1], list(range(0, 2 * LANES, 2)))
    return fvec(fvec, fvec), codegen


@intrinsic
def vodd(typingctx, a, b):
    """Lanes 1, 3, 5, ... of a ++ b."""
    def codegen(context, builder, sig, args):
        return _shuffle2(builder, args[0], args[1], list(range(1, 2 * LANES, 2)))
    return fvec(fvec, fvec), codegen


@intrinsic
def vlow_halves(typingctx, a, b):
    """The first halves of a and b, one after the other (a0 .. a7 b0 .. b7 on AVX-512)."""
    def codegen(context, builder, sig, args):
        half = LANES // 2
        return _shuffle2(builder, args[0], args[1], list(range(half)) + list(range(LANES, LANES + half)))
    return fvec(fvec, fvec), codegen


@intrinsic
def vhigh_halves(typingctx, a, b):
    """The second halves of a and b, one after the other (a8 .. a15 b8 .. b15 on AVX-512)."""
    def codegen(context, builder, sig, args):
        half = LANES // 2
        return _shuffle2(builder, args[0], args[1], list(range(half, LANES)) + list(range(LANES + half, 2 * LANES)))
    return fvec(fvec, fvec), codegen


@intrinsic
def vinterleave_lo(typingctx, a, b):
    """a0 b0 a1 b1 ... (the first halves of a and b, interleaved)."""
    def codegen(context, builder, sig, args):
        return _shuffle2(builder, args[0], args[1], [i // 2 + (LANES if i % 2 else 0) for i in range(LANES)])
    return fvec(fvec, fvec), codegen


@intrinsic
def vinterleave_hi(typingctx, a, b):
    """The second halves of a and b, interleaved."""
    def codegen(context, builder, sig, args):
        return _shuffle2(builder, args[0], args[1], [LANES // 2 + i // 2 + (LANES if i % 2 else 0) for i in range(LANES)])
    return fvec(fvec, fvec), codegen


@intrinsic
def vtake(typingctx, v, m, g, taken):
    """g where v == m and taken == 0, else 0: routes a window's gradient to its first maximum."""
    def codegen(context, builder, sig, args):
        zero = ir.Constant(_VEC, [0.0] * LANES)
        hit = builder.and_(builder.fcmp_ordered("==", args[0], args[1]),
                           builder.fcmp_ordered("==", args[3], zero))
        return builder.select(hit, args[2], zero)
    return fvec(fvec, fvec, fvec, fvec), codegen


@intrinsic
def vmark(typingctx, v, m, taken):
    """1 where v == m or taken != 0, else 0: which windows have had their maximum."""
    def codegen(context, builder, sig, args):
        zero, one = ir.Constant(_VEC, [0.0] * LANES), ir.Constant(_VEC, [1.0] * LANES)
        hit = builder.or_(builder.fcmp_ordered("==", args[0], args[1]),
                          builder.fcmp_unordered("!=", args[2], zero))
        return builder.select(hit, one, zero)
    return fvec(fvec, fvec, fvec), codegen


@intrinsic
def transpose_block(typingctx, src, s0, ss, dst, d0, ds, rows, cols):
    """dst[d0 + j*ds + i] = src[s0 + i*ss + j] for i < rows, j < cols (both <= LANES): one
    LANES x LANES block transposed in registers (masked loads, log2(LANES) rounds of shuffles,
    masked stores); nothing outside the block is read or written."""
    def codegen(context, builder, sig, args):
        ps, a0, sstride, pd, b0, dstride, nrows, ncols = args
        i64 = ir.IntType(64)
        load = _intrinsic_fn(builder, f"llvm.masked.load.{_V}.p0", _VEC, [_VEC.as_pointer(), _I32, _MASK, _VEC])
        store = _intrinsic_fn(builder, f"llvm.masked.store.{_V}.p0", ir.VoidType(), [_VEC, _VEC.as_pointer(), _I32, _MASK])
        zero_vec, zero = ir.Constant(_VEC, [0.0] * LANES), ir.Constant(i64, 0)
        m = []
        for r in range(LANES):  # row r of the block, or zeros past the last row
            live = builder.icmp_signed("<", ir.Constant(i64, r), nrows)
            n = builder.select(live, ncols, zero)
            at = builder.add(a0, builder.mul(ir.Constant(i64, r), sstride))
            m.append(builder.call(load, [_address(builder, ps, at), ir.Constant(_I32, 4), _lanes_below(builder, n),
                                         zero_vec]))
        step = LANES // 2
        while step:  # swap the off-diagonal step x step blocks of every 2step x 2step block
            for i in range(LANES):
                if i & step:
                    continue
                a, b = m[i], m[i + step]
                m[i] = _shuffle2(builder, a, b, [c if not c & step else LANES + c - step for c in range(LANES)])
                m[i + step] = _shuffle2(builder, a, b, [c + step if not c & step else LANES + c for c in range(LANES)])
            step //= 2
        for r in range(LANES):  # row r of the transpose = column r of the block
            live = builder.icmp_signed("<", ir.Constant(i64, r), ncols)
            n = builder.select(live, nrows, zero)
            at = builder.add(b0, builder.mul(ir.Constant(i64, r), dstride))
            builder.call(store, [m[r], _address(builder, pd, at), ir.Constant(_I32, 4), _lanes_below(builder, n)])
        return context.get_dummy_value()
    return types.void(src, types.int64, types.int64, dst, types.int64, types.int64, types.int64, types.int64), codegen


def _binary(name: str, emit):
    """A lane-wise binary intrinsic fvec(fvec, fvec) built by ``emit(builder, a, b)``."""
    @intrinsic
    def op(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return emit(builder, args[0], args[1])
        return fvec(fvec, fvec), codegen
    op.__name__ = op.__qualname__ = name
    return op


vsub = _binary("vsub", lambda b, x, y: b.fsub(x, y))
vmul = _binary("vmul", lambda b, x, y: b.fmul(x, y))
vdiv = _binary("vdiv", lambda b, x, y: b.fdiv(x, y))
vmin = _binary("vmin", lambda b, x, y: b.call(_intrinsic_fn(b, f"llvm.minnum.{_V}", _VEC, [_VEC] * 2), [x, y]))


@intrinsic
def vkeep_n(typingctx, v, n):
    """v in the first n lanes, zeros elsewhere (n may be <= 0 or >= LANES)."""
    def codegen(context, builder, sig, args):
        mask = _lanes_below(builder, builder.sext(args[1], ir.IntType(64)))
        return builder.select(mask, args[0], ir.Constant(_VEC, [0.0] * LANES))
    return fvec(fvec, n), codegen
