"""SPEC §2 sizes and pads, SPEC §5 validation: every rule and every bad-input class."""

import numpy as np
import pytest

from convstdp import geometry as g


@pytest.mark.parametrize(
    ("k", "s", "expected"),
    [
        (1, 1, (0, 0)),
        (2, 1, (1, 0)),  # pad_len 1, lo = ceil(1/2)
        (3, 1, (1, 1)),
        (5, 1, (2, 2)),
        (4, 2, (2, 2)),  # pad_len 4
        (5, 2, (3, 2)),  # pad_len 5 → ceil(2.5) = 3
        (3, 3, (2, 2)),  # s > k - 1 → lo = k - 1
        (2, 5, (1, 4)),  # stride larger than the kernel
    ],
)
def test_same_pads(k, s, expected):
    assert g.axis_pads(k, s, "SAME") == expected
    lo, hi = expected
    for n in (1, 4, 7):
        assert g.output_length(n, k, s, lo, hi) == n * s


@pytest.mark.parametrize(
    ("k", "s", "expected"),
    [
        (1, 1, (0, 0)),
        (3, 1, (2, 2)),
        (3, 2, (2, 2)),
        (5, 2, (4, 4)),
        (2, 3, (1, 2)),
    ],
)
def test_valid_pads(k, s, expected):
    assert g.axis_pads(k, s, "VALID") == expected
    lo, hi = expected
    for n in (1, 3, 6):
        assert g.output_length(n, k, s, lo, hi) == n * s + max(k - s, 0)


def test_output_size_explicit_and_negative_pads():
    # o = (n - 1)*s + lo + hi - k + 2
    assert g.output_length(4, 3, 2, 0, 0) == 5
    assert g.output_length(4, 3, 2, 2, 1) == 8
    assert g.output_length(4, 3, 2, -1, -2) == 2
    geo = g.check_deconv2d(np.zeros((1, 4, 6, 2)), np.zeros((3, 2, 2, 5)), (2, 3), ((2, -1), (-1, 0)))
    assert geo.out_size == (3 * 2 + 2 - 1 - 3 + 2, 5 * 3 - 1 + 0 - 2 + 2)
    assert geo.y_shape == (1, 6, 14, 5)
    assert geo.pads == ((2, -1), (-1, 0))


def test_input_length_inverts_output_length():
    for n in range(1, 9):
        for k in range(1, 6):
            for s in range(1, 4):
                for lo, hi in [g.axis_pads(k, s, "SAME"), g.axis_pads(k, s, "VALID"), (1, -1), (3, 0)]:
                    o = g.output_length(n, k, s, lo, hi)
                    if o >= 1:
                        assert g.input_length(o, k, s, lo, hi) == n
    assert g.input_length(5, 3, 2, 1, 1) == 3  # (5 - 2 + 3 - 2) / 2 + 1
    assert g.input_length(6, 3, 2, 1, 1) is None  # 5 / 2 is not whole
    assert g.input_length(1, 1, 1, 2, 2) is None  # would need n = -3


def test_padding_strings_case_insensitive_and_rectangular():
    geo = g.check_deconv2d(np.zeros((2, 3, 5, 1)), np.zeros((4, 2, 1, 1)), (3, 2), "same")
    assert geo.out_size == (9, 10)
    assert geo.pads == (g.axis_pads(4, 3, "SAME"), g.axis_pads(2, 2, "SAME"))
    geo = g.check_deconv2d(np.zeros((2, 3, 5, 1)), np.zeros((4, 2, 1, 1)), (1, 2), "Valid")
    assert geo.out_size == (3 + 3, 10)


def test_result_dtype_rules():
    f32, f64, i64, b = (np.dtype(t) for t in (np.float32, np.float64, np.int64, np.bool_))
    assert g.result_dtype(f32, f32) == f32
    assert g.result_dtype(f32, f64) == f64
    assert g.result_dtype(f32, b, i64) == f32  # spikes follow the floats
    assert g.result_dtype(b, i64) == f64  # no float input: NumPy's default float
    assert g.result_dtype(np.dtype(np.float16), b) == f32


# ----------------------------------------------------------------------------- SPEC §5 errors

X = np.zeros((2, 4, 4, 3))
K = np.zeros((3, 3, 3, 5))


@pytest.mark.parametrize(
    ("call", "exc", "fragments"),
    [
        (lambda: g.check_deconv2d(np.zeros((4, 4, 3)), K, 1, "SAME"), ValueError, ["x", "rank 4", "rank 3"]),
        (
            lambda: g.check_deconv2d(X, np.zeros((3, 3, 3)), 1, "SAME"),
            ValueError,
            ["kernel", "rank 4", "(kh, kw, Ci, Co)"],
        ),
        (
            lambda: g.check_deconv2d(X, np.zeros((3, 3, 2, 5)), 1, "SAME"),
            ValueError,
            ["kernel has 2 input channels", "x has 3"],
        ),
        (lambda: g.check_deconv2d(X, K, 0, "SAME"), ValueError, ["stride", ">= 1", "0"]),
        (lambda: g.check_deconv2d(X, K, (1, -2), "SAME"), ValueError, ["stride", "(1, -2)"]),
        (lambda: g.check_deconv2d(X, K, 1.5, "SAME"), TypeError, ["stride", "1.5"]),
        (lambda: g.check_deconv2d(X, K, (1, 2, 3), "SAME"), TypeError, ["stride", "(sh, sw)"]),
        (lambda: g.check_deconv2d(X, K, True, "SAME"), TypeError, ["stride"]),
        (lambda: g.check_deconv2d(X, K, 1, "FULL"), ValueError, ["padding", "'FULL'", "SAME", "VALID"]),
        (lambda: g.check_deconv2d(X, K, 1, ((1, 1),)), ValueError, ["padding", "((lo_h, hi_h), (lo_w, hi_w))"]),
        (lambda: g.check_deconv2d(X, K, 1, ((1, 1.5), (0, 0))), ValueError, ["explicit padding", "ints"]),
        (lambda: g.check_deconv2d(X, K, 1, 3), ValueError, ["padding", "3"]),
        (
            lambda: g.check_deconv2d(X, K, 1, ((-3, -3), (0, 0))),
            ValueError,
            ["empty output", "gives output size (-4, 2)"],
        ),
        (lambda: g.check_deconv2d(X.astype(complex), K, 1, "SAME"), TypeError, ["x", "complex"]),
        (lambda: g.check_deconv2d(X.astype(str), K, 1, "SAME"), TypeError, ["x", "dtype"]),
        (lambda: g.check_deconv2d(X, K.astype(object), 1, "SAME"), TypeError, ["kernel", "object"]),
        (lambda: g.check_deconv2d([[1.0]], K, 1, "SAME"), TypeError, ["x", "must be an array"]),
        (
            lambda: g.check_deconv2d_dk(X, np.zeros((2, 5, 5, 5)), 3, 1, "SAME"),
            ValueError,
            [
                "d_out has spatial size (5, 5) but x (4, 4) with kernel (3, 3), stride (1, 1), padding SAME",
                "gives (4, 4)",
            ],
        ),
        (
            lambda: g.check_deconv2d_dk(X, np.zeros((3, 4, 4, 5)), 3, 1, "SAME"),
            ValueError,
            ["d_out has batch size 3", "x has 2"],
        ),
        (lambda: g.check_deconv2d_dk(X, np.zeros((2, 4, 4, 5)), 0, 1, "SAME"), ValueError, ["kernel_size", ">= 1"]),
        (lambda: g.check_deconv2d_dk(X, np.zeros((2, 4, 4, 5)), "3", 1, "SAME"), TypeError, ["kernel_size"]),
        (
            lambda: g.check_deconv2d_dx(K, np.zeros((2, 4, 4, 4)), 1, "SAME"),
            ValueError,
            ["d_out has 4 channels", "kernel has 5 output channels"],
        ),
        (
            lambda: g.check_deconv2d_dx(K, np.zeros((2, 7, 8, 5)), 2, "SAME"),
            ValueError,
            ["d_out height 7", "whole number"],
        ),
        (
            lambda: g.check_deconv2d_dx(K, np.zeros((2, 8, 8, 5)), 2, "SAME", input_shape=(2, 4, 5, 3)),
            ValueError,
            ["input_shape (2, 4, 5, 3)", "(2, 4, 4, 3)"],
        ),
        (
            lambda: g.check_deconv2d_dx(K, np.zeros((2, 8, 8, 5)), 2, "SAME", input_shape=(4,)),
            ValueError,
            ["input_shape", "(N, H, W, Ci) or (H, W)"],
        ),
    ],
)
def test_bad_input_messages(call, exc, fragments):
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"


def test_stdp_update_shape_errors():
    pre = np.zeros((2, 4, 4, 3))
    post = np.zeros((2, 4, 4, 5))
    assert g.check_stdp_update(K, pre, pre, post, post, 1, "SAME").y_shape == (2, 4, 4, 5)
    cases = [
        ((K, pre, pre[:, :3], post, post), "pre_trace has shape (2, 3, 4, 3) but pre_spike has (2, 4, 4, 3)"),
        ((K, pre, pre, post, post[:1]), "post_trace has shape (1, 4, 4, 5) but post_spike has (2, 4, 4, 5)"),
        ((K, pre, pre, post[:1], post[:1]), "post_spike has batch size 1 but pre_spike has 2"),
        ((K, pre, pre, post[..., :2], post[..., :2]), "post_spike has 2 channels but kernel has 5 output channels"),
        ((K, pre, pre, post[:, :3], post[:, :3]), "post_spike has spatial size (3, 4) but pre_spike (4, 4)"),
    ]
    for args, fragment in cases:
        with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            g.check_stdp_update(*args, 1, "SAME")


def test_scalars():
    assert g.check_scalar("eta", 1) == 1.0
    assert g.check_scalar("eta", np.float32(0.5)) == 0.5
    assert g.check_scalar("eta", np.array(0.25)) == 0.25
    for bad in ("0.1", None, [0.1], 1j, True):
        with pytest.raises(TypeError, match="eta must be a real scalar"):
            g.check_scalar("eta", bad)


def test_unhashable_padding_is_accepted():
    geo = g.check_deconv2d(X, K, [2, 1], [[1, 0], [0, 2]])
    assert geo.pads == ((1, 0), (0, 2))
    assert geo.stride == (2, 1)


def test_memoised_checks_key_on_shapes_dtypes_and_parameters():
    a = g.check_deconv2d(X, K, 1, "SAME")
    assert g.check_deconv2d(np.ones((2, 4, 4, 3)), K, 1, "SAME") is a  # values do not matter
    assert g.check_deconv2d(X, K, 2, "SAME").out_size == (8, 8)
    assert g.check_deconv2d(X.astype(np.float32), K.astype(np.float32), 1, "SAME").dtype == np.float32
    for _ in range(2):  # a failure is never cached
        with pytest.raises(ValueError, match="kernel has 2 input channels"):
            g.check_deconv2d(X, np.zeros((3, 3, 2, 5)), 1, "SAME")
    geo = g.check_stdp_step(K, X, X, X, np.zeros((2, 4, 4, 5)), np.zeros((2, 4, 4, 5)), 1, "SAME")
    assert geo.y_shape == (2, 4, 4, 5)
    with pytest.raises(ValueError, match=r"x has shape \(1, 4, 4, 3\) but pre_spike has \(2, 4, 4, 3\)"):
        g.check_stdp_step(K, X[:1], X, X, np.zeros((2, 4, 4, 5)), np.zeros((2, 4, 4, 5)), 1, "SAME")


def test_parameters_normalise_to_exact_python_ints():
    """Integers of any kind (and integer arrays) become Python ints; bools and floats never pass."""
    assert g.normalize_stride(np.int64(2)) == (2, 2) and type(g.normalize_stride(np.int64(2))[0]) is int
    assert g.normalize_stride(np.array([2, 1])) == (2, 1)
    assert g.normalize_kernel_size([np.uint8(3), 2]) == (3, 2)
    assert g.normalize_padding("valid") == "VALID"
    assert g.normalize_padding(np.array([[1, -1], [0, 2]])) == ((1, -1), (0, 2))
    assert g.normalize_padding([[np.int32(1), 0], (0, 1)]) == ((1, 0), (0, 1))
    assert g.normalize_input_shape(np.array([1, 4, 4, 2])) == (1, 4, 4, 2)
    assert g.normalize_input_shape(None) is None
    for bad in (True, 2.0, np.float64(2), (2.0, 1), np.array([2.0, 1.0]), (True, 1), "2", None, np.array(2)):
        with pytest.raises(TypeError, match="stride"):
            g.normalize_stride(bad)
    for bad in (((1.0, 0), (0, 0)), ((True, 0), (0, 0)), np.array([[1.0, 0], [0, 0]]), b"SAME", ((1,), (2,))):
        with pytest.raises(ValueError, match="padding"):
            g.normalize_padding(bad)
    for bad in ("54", 5, "abcd", (1, None, 4, 1), (1, 5.9, 4.2, 1), np.array([1.0, 4, 4, 1]), (True, 4, 4, 1)):
        with pytest.raises(TypeError, match="input_shape"):
            g.normalize_input_shape(bad)


def test_size_guard_names_the_cause():
    x = np.zeros((1, 10, 10, 1))
    k = np.zeros((3, 3, 1, 1))
    with pytest.raises(ValueError, match=r"^stride \(1000000000, 1000000000\) is too large: the output y"):
        g.check_deconv2d(x, k, 10**9, "SAME")
    with pytest.raises(ValueError, match=r"^padding \(\(~2\*\*62, 0\), \(0, 0\)\) is too large"):
        g.check_deconv2d(x, k, 1, ((2**62, 0), (0, 0)))
    with pytest.raises(ValueError, match=r"^padding .* the stride-dilated, padded input map"):
        g.check_deconv2d(x, k, 1, ((2**40, -(2**40)), (0, 0)))
    with pytest.raises(ValueError, match=r"^kernel_size \(~2\*\*60, ~2\*\*60\) is too large: the kernel gradient"):
        g.check_deconv2d_dk(x, np.zeros((1, 10, 10, 1)), 2**60, 1, "SAME")
    with pytest.raises(ValueError, match=r"^padding .* the input gradient dX"):
        g.check_deconv2d_dx(k, np.zeros((1, 10, 10, 1)), 1, ((-(2**50), 0), (0, 0)))
    with pytest.raises(ValueError, match=r"^stride \(~2\*\*1328, ~2\*\*1328\) is too large"):  # no int-to-str limit
        g.check_deconv2d(x, k, 10**400, "SAME")
