"""Tests of tf_recurrent_seg.data.pipeline and of the TF image ops it uses (`image_ops`): expectations come from
the numpy reference (`image_ops.resize_and_pad` and friends, `text.Vocabulary.encode`, keras.applications) or
are constructed by hand (flip, crops, bad records)."""

import io
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_recurrent_seg import image_ops
from tf_recurrent_seg.data import pipeline, records
from tf_recurrent_seg.image_ops import caffe_preprocess, resize_and_pad, unpad_and_resize
from tf_recurrent_seg.text import Vocabulary, build_vocabulary, tokenize

# (height, width): landscape, portrait, square, extreme, tiny (upscaled), a .5 rounding case (427 * 0.5 = 213.5);
# Pillow resizes (1000, 97) and (800, 300) vertically first, (640, 320) (the tie of its rule) horizontally first.
SHAPES = [
    (480, 640),
    (640, 480),
    (320, 320),
    (1000, 97),
    (97, 1000),
    (7, 500),
    (50, 70),
    (640, 427),
    (333, 500),
    (1, 1),
    (800, 300),
    (640, 320),
]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _smooth_image(rng, height, width):
    coarse = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def _ellipse_mask(height, width):
    yy, xx = np.mgrid[:height, :width]
    return (((yy - height / 2) / (height / 3)) ** 2 + ((xx - width / 3) / (width / 4)) ** 2 < 1).astype(np.uint8)


def _raw_example(features: dict) -> bytes:
    """An Example written directly, bypassing the converters' checks."""
    feature = {}
    for key, value in features.items():
        if isinstance(value, int):
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        else:
            value = value.encode() if isinstance(value, str) else value
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _referring_record(image, mask, expression, sent_id) -> bytes:
    return records.referring_example(
        _png(image), image.shape[0], image.shape[1], f"{sent_id}.png", mask, expression, sent_id, sent_id, "test", "val"
    ).SerializeToString()


def _write(path, serialized_records) -> str:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in serialized_records:
            writer.write(record)
    return str(path)


WORDS = ["man", "left", "right", "the", "on", "dog", "red", "car", "a", "of", "blue", "big"]
VOCAB = Vocabulary(["<pad>", "<go>", "<eos>", "<unk>", *WORDS, ",", "."])


def _expression(rng, length):
    return " ".join(rng.choice(WORDS, length).tolist())


@pytest.fixture(scope="module")
def referring_shards(tmp_path_factory):
    """4 shards of 6 valid referring records each (sent_id = record number; expression lengths 1..12)."""
    directory = tmp_path_factory.mktemp("referring")
    rng = np.random.default_rng(0)
    shards = [[] for _ in range(4)]
    for index in range(24):
        height, width = (int(v) for v in rng.integers(20, 60, 2))
        image = _smooth_image(rng, height, width)
        shards[index % 4].append(
            _referring_record(image, _ellipse_mask(height, width), _expression(rng, 1 + index % 12), index)
        )
    return [_write(directory / f"ref-{i:05d}-of-00004.tfrecord", shard) for i, shard in enumerate(shards)]


# --- resize and pad, undo -----------------------------------------------------------------------------------


@pytest.mark.parametrize("height,width", SHAPES)
def test_resize_and_pad_matches_numpy(height, width):
    rng = np.random.default_rng(height * 1000 + width)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    expected, placement = resize_and_pad(image, 320)
    exact, tf_placement = image_ops.resize_and_pad_image(image, 320, exact=True)
    fast, _ = image_ops.resize_and_pad_image(image, 320)
    assert tuple(tf_placement.numpy().tolist()) == placement
    np.testing.assert_array_equal(exact.numpy(), expected)  # bit for bit with Pillow's BILINEAR
    assert np.abs(fast.numpy().astype(int) - expected).max() <= 1
    top, left, new_h, new_w = placement  # padding is exactly zero in both modes
    outside = np.ones((320, 320), bool)
    outside[top : top + new_h, left : left + new_w] = False
    assert not fast.numpy()[outside].any()


@pytest.mark.parametrize("height,width", [(480, 640), (1000, 97), (333, 500), (50, 70), (640, 427)])
def test_mask_resize_matches_numpy(height, width):
    mask = _ellipse_mask(height, width)
    mask[height // 5 : height // 5 + 2] = 1  # a thin stripe: resizing decides it pixel by pixel
    image = np.zeros((height, width, 3), np.uint8)
    expected = resize_and_pad(mask, 320)[0] > 0
    _, exact, placement = image_ops.resize_and_pad_image_and_mask(image, mask, 320, exact=True)
    np.testing.assert_array_equal(exact.numpy(), expected.astype(np.float32))
    separate = image_ops.resize_and_pad_mask(mask, placement, 320, exact=True)
    np.testing.assert_array_equal(separate.numpy(), exact.numpy())
    _, fast, _ = image_ops.resize_and_pad_image_and_mask(image, mask, 320)
    assert set(np.unique(fast.numpy())) <= {0.0, 1.0}
    assert (fast.numpy().astype(bool) != expected).sum() <= 0.015 * expected.sum()  # boundary ties only


@pytest.mark.parametrize("height,width", SHAPES)
def test_fast_resize_is_tf_image_resize_bit_for_bit(height, width):
    """The default resize runs ScaleAndTranslate's row pass twice around a transpose instead of its column loop:
    the same float32 sums, so the same values as one `tf.image.resize(antialias=True)`, for any channel count,
    down- and upscaling."""
    rng = np.random.default_rng(height + 7 * width)
    for channels, (new_h, new_w) in [(3, resize_and_pad(np.zeros((height, width)), 320)[1][2:]), (1, (37, 300))]:
        image = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        expected = tf.image.resize(image.astype(np.float32), (new_h, new_w), antialias=True).numpy()
        window = image_ops._antialiased_resize_window(tf.constant(image), new_h, new_w, 0, 0, new_h, new_w)
        np.testing.assert_array_equal(window.numpy().view(np.uint32), expected.view(np.uint32))
        rounded = np.clip(np.floor(expected + 0.5), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(image_ops.bilinear_resize(image, new_h, new_w, exact=False).numpy(), rounded)


@pytest.mark.parametrize("exact", [False, True])
def test_resize_crop_is_the_crop_of_the_resize(exact):
    rng = np.random.default_rng(11)
    image = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
    labels = rng.integers(0, 18, (90, 70), dtype=np.uint8)
    for new_h, new_w, top, left, height, width in [
        (120, 100, 0, 0, 120, 100),
        (120, 100, 7, 30, 64, 70),
        (45, 35, 3, 2, 40, 33),
    ]:
        full = image_ops.bilinear_resize(image, new_h, new_w, exact).numpy()
        crop = image_ops.bilinear_resize_crop(image, new_h, new_w, top, left, height, width, exact).numpy()
        np.testing.assert_array_equal(crop, full[top : top + height, left : left + width])
        full_labels = image_ops.nearest_resize(labels, new_h, new_w).numpy()
        crop_labels = image_ops.nearest_resize_crop(labels, new_h, new_w, top, left, height, width).numpy()
        np.testing.assert_array_equal(crop_labels, full_labels[top : top + height, left : left + width])


@pytest.mark.parametrize("height,width", SHAPES)
def test_undo_resize_and_pad_equals_numpy(height, width):
    rng = np.random.default_rng(7)
    prediction = rng.integers(0, 6, (320, 320)).astype(np.uint8)
    placement = resize_and_pad(np.zeros((height, width), np.uint8), 320)[1]
    expected = unpad_and_resize(prediction, placement, (height, width))
    result = image_ops.undo_resize_and_pad(prediction, placement, (height, width))
    assert result.dtype == tf.uint8
    np.testing.assert_array_equal(result.numpy(), expected)


def test_undo_inverts_resize_and_pad_of_a_block_mask():
    mask = np.zeros((480, 640), np.uint8)
    mask[100:300, 200:500] = 1  # even-aligned block: the 2x down/up sampling is exact
    image = np.zeros((480, 640, 3), np.uint8)
    for exact in (True, False):
        _, padded, placement = image_ops.resize_and_pad_image_and_mask(image, mask, 320, exact=exact)
        back = image_ops.undo_resize_and_pad(padded, placement, (480, 640))
        np.testing.assert_array_equal(back.numpy(), mask.astype(np.float32))
    # bilinear (for logits) keeps a constant region constant and returns the original size
    logits = tf.fill([320, 320, 1], 2.5)
    back = image_ops.undo_resize_and_pad(logits, placement, (480, 640), method="bilinear")
    assert back.shape == (480, 640, 1)
    np.testing.assert_allclose(back.numpy(), 2.5)


def test_undo_resize_and_pad_batch_pads_to_the_largest():
    sizes = [(480, 640), (100, 50)]
    placements = [resize_and_pad(np.zeros(size, np.uint8), 320)[1] for size in sizes]
    predictions = np.random.default_rng(1).integers(0, 2, (2, 320, 320)).astype(np.int32)
    result = image_ops.undo_resize_and_pad_batch(predictions, placements, sizes, pad_value=255).numpy()
    assert result.shape == (2, 480, 640)
    for i, (height, width) in enumerate(sizes):
        expected = unpad_and_resize(predictions[i], placements[i], (height, width))
        np.testing.assert_array_equal(result[i, :height, :width], expected)
    assert (result[1, 100:] == 255).all() and (result[1, :, 50:] == 255).all()


# --- mapping back: by hand, and against the RMI authors' rule -------------------------------------------------


def _pixel_names(size: int) -> np.ndarray:
    """(S, S) int32 prediction whose value names its own pixel, 100 * row + column: a mapped-back map shows
    which padded pixel each original pixel reads."""
    return (100 * np.arange(size)[:, None] + np.arange(size)[None, :]).astype(np.int32)


def _authors_source_indices(
    height: int, width: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The S x S pixel rows and columns that the RMI authors' map-back reads (their test code's
    `resize_and_crop`): resize the S x S prediction to R x R, R = round(S * max(h / S, w / S)), then crop
    h x w at floor((R - h) / 2), floor((R - w) / 2). Their resize is bilinear; here nearest at pixel centres
    in exact integer arithmetic (output pixel k reads floor((k + 1/2) S / R)), so only the geometry counts.

    Returns (rows (h,), cols (w,), row_ties (h,), col_ties (w,)); a tie is an output pixel centre falling
    exactly on a boundary between two source pixels, where either is as near."""
    resized = int(np.round(size * max(height / size, width / size)))
    numerators = (2 * np.arange(resized) + 1) * size  # source coordinate (k + 1/2) S / R = numerator / 2R
    source, ties = numerators // (2 * resized), numerators % (2 * resized) == 0
    top, left = (resized - height) // 2, (resized - width) // 2
    return source[top : top + height], source[left : left + width], ties[top : top + height], ties[left : left + width]


# 4 x 6 originals. S = 9: scale min(9/4, 9/6) = 1.5, new size 6 x 9, pad top floor((9 - 6) / 2) = 1.
# Original row i reads padded row 1 + floor((i + 1/2) * 6/4) = 1 + floor(.75, 2.25, 3.75, 5.25) = 1, 3, 4, 6;
# column j reads floor((j + 1/2) * 9/6) = floor(.75, 2.25, 3.75, 5.25, 6.75, 8.25) = 0, 2, 3, 5, 6, 8.
# The authors: R = round(9 * 6/9) = 6, crop top floor((6 - 4) / 2) = 1: rows k = 1..4 of the 6 x 6 resize,
# which read padded rows floor((k + 1/2) * 9/6) = 2, 3, 5, 6 (columns as ours). They assume the image starts
# 1.5 padded rows down; the resize-and-pad (theirs and ours) floored that pad to 1.
# S = 12: scale 2, new size 8 x 12, pad top 2: rows 2 + (1, 3, 5, 7), columns 1, 3, ..., 11. The authors:
# R = 6, crop top 1, rows floor((k + 1/2) * 2) = 3, 5, 7, 9 for k = 1..4: the same pixels (the pad, 2, is
# exactly the crop, 1 original pixel, times the scale 2).
_ROWS_1346 = [
    [100, 102, 103, 105, 106, 108],
    [300, 302, 303, 305, 306, 308],
    [400, 402, 403, 405, 406, 408],
    [600, 602, 603, 605, 606, 608],
]
_ROWS_2356 = [
    [200, 202, 203, 205, 206, 208],
    [300, 302, 303, 305, 306, 308],
    [500, 502, 503, 505, 506, 508],
    [600, 602, 603, 605, 606, 608],
]
_ROWS_3579 = [
    [301, 303, 305, 307, 309, 311],
    [501, 503, 505, 507, 509, 511],
    [701, 703, 705, 707, 709, 711],
    [901, 903, 905, 907, 909, 911],
]
HAND_CASES = {  # size: (placement of a 4 x 6 original, ours, the authors')
    9: ((1, 0, 6, 9), _ROWS_1346, _ROWS_2356),
    12: ((2, 0, 8, 12), _ROWS_3579, _ROWS_3579),
}


@pytest.mark.parametrize("size", sorted(HAND_CASES))
def test_undo_resize_and_pad_by_hand(size):
    placement, ours, authors = HAND_CASES[size]
    prediction = _pixel_names(size)
    assert tuple(image_ops.resize_placement(4, 6, size).numpy().tolist()) == placement
    np.testing.assert_array_equal(image_ops.undo_resize_and_pad(prediction, placement, (4, 6)).numpy(), ours)
    np.testing.assert_array_equal(unpad_and_resize(prediction, placement, (4, 6)), ours)
    rows, cols, _, _ = _authors_source_indices(4, 6, size)
    np.testing.assert_array_equal(prediction[np.ix_(rows, cols)], authors)


def test_undo_resize_and_pad_batch_by_hand():
    """What evaluation calls. A 2 x 6 original at S = 9 (scale 1.5, new size 3 x 9, pad top 3) reads rows
    3 + floor((i + 1/2) * 3/2) = 3, 5 and the columns of the 4 x 6 case; -1 pads it to the batch's 4 x 6."""
    prediction = _pixel_names(9)
    placements = [HAND_CASES[9][0], (3, 0, 3, 9)]
    predictions = np.stack([prediction, prediction])
    result = image_ops.undo_resize_and_pad_batch(predictions, placements, [(4, 6), (2, 6)], pad_value=-1)
    expected_second = [[300, 302, 303, 305, 306, 308], [500, 502, 503, 505, 506, 508], [-1] * 6, [-1] * 6]
    np.testing.assert_array_equal(result.numpy(), [HAND_CASES[9][1], expected_second])


def test_undo_resize_and_pad_against_the_authors_rule():
    """Where our placement coincides with the authors' crop (pad = crop offset * S / R and new size = h * S / R
    on both axes), both rules read the same pixels, except at ties, where Pillow's accumulated float coordinate
    (ours) may land just below the boundary and read the pixel before. Elsewhere they differ by at most one
    padded pixel per axis when the image's long side is at least S, as in the RMI datasets at S = 320 (smaller
    images can be off by half an original pixel; docs/decisions.md, section "Evaluation map-back")."""
    size = 320
    shapes = [
        (480, 640),
        (360, 480),
        (360, 640),
        (960, 1280),
        (320, 320),
        (160, 320),
        (612, 612),
        (500, 500),
        (427, 640),
        (426, 640),
        (375, 500),
        (333, 500),
        (321, 999),
        (1000, 321),
        (640, 640),
    ]
    shapes += [(w, h) for h, w in shapes]
    prediction = (size * np.arange(size)[:, None] + np.arange(size)[None, :]).astype(np.int32)  # names its pixel
    coinciding, differing = set(), set()
    for height, width in shapes:
        placement = tuple(image_ops.resize_placement(height, width, size).numpy().tolist())
        back = image_ops.undo_resize_and_pad(prediction, placement, (height, width)).numpy()
        ours_rows, ours_cols = back[:, 0] // size, back[0] % size
        rows, cols, row_ties, col_ties = _authors_source_indices(height, width, size)
        resized = max(height, width)
        authors_placement = (
            (resized - height) // 2 * size / resized,
            (resized - width) // 2 * size / resized,
            height * size / resized,
            width * size / resized,
        )
        if placement == authors_placement:
            coinciding.add((height, width))
            for ours, theirs, ties in ((ours_rows, rows, row_ties), (ours_cols, cols, col_ties)):
                np.testing.assert_array_equal(ours[~ties], theirs[~ties], err_msg=f"{height}x{width}")
                assert set((theirs - ours)[ties].tolist()) <= {0, 1}, f"{height}x{width}"
        else:
            differing.add((height, width))
            assert np.abs(ours_rows - rows).max() <= 1 and np.abs(ours_cols - cols).max() <= 1, f"{height}x{width}"
    # both kinds occur: the most common COCO (480x640) and ReferIt (360x480) sizes coincide, 427x640 does not
    assert {(480, 640), (360, 480), (640, 480)} <= coinciding and {(427, 640), (375, 500)} <= differing


# --- tokenisation ---------------------------------------------------------------------------------------------

TRICKY = [
    "The man, on the LEFT.",
    "man on the left",
    "  leading and trailing spaces  ",
    "multiple   spaces\tand\ttabs\nnewline",
    "left.",
    "left .",
    "left..",
    "a.b.",
    "what's that?!",
    "man , left",
    "the man ' s hat",
    "(big) [red] {car} -- 2nd from left; 3rd_row",
    "under_score and digits 123 456",
    "café au lait, naïve",
    "CAFÉ ÉCOLE",
    "ΟΔΟΣ Straße",
    "\u212a kelvin İstanbul",
    "ideographic\u3000space and\xa0nbsp",
    "odd\x1cseparators\x1d\x1e\x1f\x85here\u2028there\u2029",
    "emoji 😀 dog 🐶!",
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty twentyone twentytwo",
    ".",
    "   ",
    "",
    " . ",
    ". . .",
    "man. . ",
    "...",
    "\u3000.\u3000",
    "<unk> <pad>",
]


def _encode_all(sentences, vocabulary, strip_pieces, max_words=20):
    table = pipeline.vocabulary_table(vocabulary)
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant([s.encode("utf-8") for s in sentences], tf.string))
    dataset = dataset.map(lambda s: pipeline.encode_tf(s, table, max_words, strip_pieces=strip_pieces)).batch(4096)
    ids, counts = zip(*[(i.numpy(), n.numpy()) for i, n in dataset])
    return np.concatenate(ids), np.concatenate(counts)


@pytest.mark.parametrize("strip_pieces", [True, False])
def test_in_graph_tokenisation_equals_vocabulary_encode(strip_pieces):
    vocabulary = build_vocabulary(TRICKY + ["ideographic\u3000.", "é"])
    # a duplicate token resolves to its LAST id, as Vocabulary does
    duplicated = Vocabulary([*vocabulary.tokens, "", "man", "left"], duplicates="last")
    for vocab in (vocabulary, duplicated, VOCAB):
        for max_words in (20, 3):
            ids, counts = _encode_all(TRICKY, vocab, strip_pieces, max_words)
            for sentence, row, count in zip(TRICKY, ids, counts):
                tokens = tokenize(sentence, strip_pieces=strip_pieces)
                assert count == len(tokens), sentence
                if tokens:
                    expected = vocab.encode(sentence, max_words, strip_pieces=strip_pieces)
                    np.testing.assert_array_equal(row, expected, err_msg=repr(sentence))
                else:
                    assert not row.any()
    for sentence in TRICKY:
        got = [
            t.decode("utf-8") for t in pipeline.tokenize_tf(tf.constant(sentence), strip_pieces=strip_pieces).numpy()
        ]
        assert got == tokenize(sentence, strip_pieces=strip_pieces), repr(sentence)


@pytest.mark.parametrize("vocabulary_name", ["vocabulary_referit.txt", "vocabulary_Gref.txt"])
def test_in_graph_tokenisation_on_referit_val(shared_data_dir, vocabulary_name):
    vocabulary = Vocabulary.load(shared_data_dir / vocabulary_name)
    with open(shared_data_dir / "referit_query_val.json", encoding="utf-8") as file:
        sentences = [s for expressions in json.load(file).values() for s in expressions]
    assert len(sentences) > 5000
    for strip_pieces in (True, False):
        ids, counts = _encode_all(sentences, vocabulary, strip_pieces)
        for sentence, row, count in zip(sentences, ids, counts):
            if count:
                expected = vocabulary.encode(sentence, strip_pieces=strip_pieces)
                np.testing.assert_array_equal(row, expected, err_msg=repr(sentence))
            else:
                assert not tokenize(sentence, strip_pieces=strip_pieces)


# --- normalisation --------------------------------------------------------------------------------------------


def test_normalisation_values_on_a_known_pixel():
    pixel = np.array([[[[10, 20, 30]]]], np.uint8)
    caffe = image_ops.normalize_images(pixel, "bgr_minus_caffe_resnet_mean").numpy()
    np.testing.assert_array_equal(caffe, caffe_preprocess(pixel))
    np.testing.assert_array_equal(
        caffe[0, 0, 0], np.float32([30, 20, 10]) - np.float32([104.00698793, 116.66876762, 122.67891434])
    )
    imagenet = image_ops.normalize_images(pixel, "bgr_minus_imagenet_mean").numpy()
    np.testing.assert_array_equal(imagenet, keras.applications.resnet.preprocess_input(pixel.astype(np.float32)))
    np.testing.assert_array_equal(imagenet, keras.applications.vgg16.preprocess_input(pixel.astype(np.float32)))
    np.testing.assert_array_equal(imagenet[0, 0, 0], np.float32([30, 20, 10]) - np.float32([103.939, 116.779, 123.68]))
    assert sorted(image_ops.NORMALIZATION_MEANS) == ["bgr_minus_caffe_resnet_mean", "bgr_minus_imagenet_mean"]
    with pytest.raises(ValueError, match="normalization must be one of .*bgr_minus_imagenet_mean.*'torch'"):
        image_ops.normalize_images(pixel, "torch")


def test_default_normalisation_per_task_and_no_older_names():
    from tf_recurrent_seg.defaults import parsing_config, referring_config

    defaults_per_task = {
        "referring": referring_config().data.normalization,
        "parsing": parsing_config().data.normalization,
    }
    assert defaults_per_task == {"referring": "bgr_minus_caffe_resnet_mean", "parsing": "bgr_minus_imagenet_mean"}
    images = np.zeros((1, 2, 2, 3), np.uint8)
    for old in ("caffe", "keras_resnet", "caffe_vgg"):  # the names of configs before 0.1.0: refused, not renamed
        with pytest.raises(ValueError, match=f"normalization must be one of .*'{old}'"):
            image_ops.normalize_images(images, old)


# --- parsing augmentation --------------------------------------------------------------------------------------

ATR_PAIRS = ((9, 10), (12, 13), (14, 15))


def _lr_scene(size=8):
    labels = np.full((size, size), 4, np.uint8)
    labels[:, :2] = 9  # left arm in the image's left columns
    labels[: size // 2, -2:] = 12  # left leg, top right
    image = np.zeros((size, size, 3), np.uint8)
    image[..., 0] = np.arange(size, dtype=np.uint8)[None, :] * 15  # encodes the column: shows whether it flipped
    image[..., 1] = labels * 10
    return image, labels


def test_flip_swaps_left_right_labels():
    image, labels = _lr_scene()
    swap = pipeline.flip_swap_table(ATR_PAIRS, 18)
    assert swap[9] == 10 and swap[10] == 9 and swap[13] == 12 and swap[4] == 4 and swap[255] == 255
    flipped_seen = kept_seen = False
    for seed in range(16):
        out_image, out_labels = pipeline.augment_parsing_example(
            image, labels, tf.constant([seed, 1], tf.int64), image_size=8, scale_range=(1.0, 1.0), swap_table=swap
        )
        out_image, out_labels = out_image.numpy(), out_labels.numpy()
        if np.array_equal(out_image, image):
            kept_seen = True
            np.testing.assert_array_equal(out_labels, labels)
        else:
            flipped_seen = True
            np.testing.assert_array_equal(out_image, image[:, ::-1])
            # the left-arm pixels moved to the right side and are now right arm (10); the left leg (12) at the
            # top right moved to the top left and became right leg (13); other ids stay
            assert (
                (out_labels[:, -2:] == 10).all()
                and (out_labels[:4, :2] == 13).all()
                and (out_labels[:, 2:6] == 4).all()
            )
            assert not np.isin(out_labels, [9, 12]).any()
    assert flipped_seen and kept_seen


def test_flip_swap_table_rejects_bad_pairs():
    with pytest.raises(ValueError, match="outside"):
        pipeline.flip_swap_table(((9, 20),), 18)
    with pytest.raises(ValueError, match="more than one"):
        pipeline.flip_swap_table(((9, 10), (10, 11)), 18)


@pytest.mark.parametrize("exact", [False, True])
def test_random_scale_and_crop_keep_labels_aligned(exact):
    rng = np.random.default_rng(3)
    labels = np.kron(rng.integers(0, 6, (8, 10)), np.ones((12, 12), np.int64)).astype(np.uint8)  # 96 x 120 blocks
    image = np.stack([labels * 40, 255 - labels * 40, np.full_like(labels, 7)], axis=-1).astype(np.uint8)
    padded_seen = False
    for seed in range(12):
        out_image, out_labels = pipeline.augment_parsing_example(
            image, labels, tf.constant([seed, 5], tf.int64), image_size=64, scale_range=(0.5, 1.5), exact=exact
        )
        out_image, out_labels = out_image.numpy().astype(int), out_labels.numpy()
        assert out_image.shape == (64, 64, 3) and out_labels.shape == (64, 64) and out_labels.dtype == np.int32
        pad = out_labels == 255
        padded_seen |= pad.any()
        # crop offsets agree: exactly the padded pixels are 0 in the image (G = 255 - 40 * label > 0 elsewhere)
        np.testing.assert_array_equal(pad, out_image[..., 1] == 0)
        assert not out_image[pad].any()
        # scale agrees: away from block boundaries the image encodes the label exactly
        window = np.lib.stride_tricks.sliding_window_view(np.pad(out_labels, 2, constant_values=-1), (5, 5))
        interior = (window == out_labels[..., None, None]).all(axis=(-1, -2)) & ~pad
        assert interior.sum() > 500
        np.testing.assert_array_equal(out_image[..., 0][interior], 40 * out_labels[interior])
    assert padded_seen  # scales below 64/96 needed padding


# --- datasets -------------------------------------------------------------------------------------------------------


def test_referring_training_batches_shapes_and_dtypes(referring_shards):
    dataset = pipeline.referring_dataset(
        referring_shards, VOCAB, training=True, batch_size=3, image_size=40, seed=1, group_by_length=False
    )
    features, targets = next(iter(dataset))
    assert set(features) == {"image", "tokens"} and set(targets) == {"mask"}
    assert features["image"].shape == (3, 40, 40, 3) and features["image"].dtype == tf.float32
    assert features["tokens"].shape == (3, 20) and features["tokens"].dtype == tf.int32
    assert targets["mask"].shape == (3, 40, 40) and targets["mask"].dtype == tf.float32
    assert set(np.unique(targets["mask"].numpy())) <= {0.0, 1.0}
    assert dataset.element_spec[0]["image"].shape == (3, 40, 40, 3)  # static batch size when training


def test_referring_evaluation_elements_match_numpy(referring_shards):
    dataset = pipeline.referring_dataset(
        referring_shards[:1], VOCAB, training=False, batch_size=4, image_size=40, exact_resize=True
    )
    source = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(referring_shards[:1])]
    rows = [(f, t, i) for f, t in dataset for i in range(f["image"].shape[0])]
    assert len(rows) == len(source) == 6
    for (features, targets, i), example in zip(rows, source):
        feature = example.features.feature
        image = np.asarray(Image.open(io.BytesIO(feature["image/encoded"].bytes_list.value[0])))
        mask = np.asarray(Image.open(io.BytesIO(feature["mask/encoded"].bytes_list.value[0])))
        expression = feature["expression/raw"].bytes_list.value[0].decode()
        padded_image, placement = resize_and_pad(image, 40)
        np.testing.assert_array_equal(features["image"][i].numpy(), caffe_preprocess(padded_image))
        np.testing.assert_array_equal(features["tokens"][i].numpy(), VOCAB.encode(expression))
        np.testing.assert_array_equal(targets["mask"][i].numpy(), (resize_and_pad(mask, 40)[0] > 0).astype(np.float32))
        assert tuple(targets["placement"][i].numpy()) == placement
        height, width = targets["original_size"][i].numpy()
        assert (height, width) == mask.shape
        np.testing.assert_array_equal(targets["original_mask"][i, :height, :width].numpy(), mask.astype(np.float32))
        assert not targets["original_mask"][i, height:].numpy().any()
        assert targets["num_tokens"][i] == len(tokenize(expression))
        assert targets["sent_id"][i] == feature["sent_id"].int64_list.value[0]
        # the evaluation path back to the original resolution
        back = image_ops.undo_resize_and_pad(targets["mask"][i], targets["placement"][i], targets["original_size"][i])
        assert back.shape == mask.shape


def test_sharding_by_input_context_is_disjoint(referring_shards):
    def collect(training, pipeline_id):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
        )
        dataset = pipeline.referring_dataset(
            referring_shards,
            VOCAB,
            training=training,
            repeat=False,
            batch_size=1,
            image_size=8,
            input_context=context,
            group_by_length=False,
            seed=pipeline_id,
        )
        if training:  # training elements carry no ids: identify the records by their masks' and tokens' bytes
            return sorted((f["tokens"].numpy().tobytes(), t["mask"].numpy().tobytes()) for f, t in dataset)
        return sorted(int(s) for _, t in dataset for s in t["sent_id"].numpy())

    first, second = collect(False, 0), collect(False, 1)
    assert first == [i for i in range(24) if i % 4 in (0, 2)] and second == [i for i in range(24) if i % 4 in (1, 3)]
    first, second = collect(True, 0), collect(True, 1)
    assert len(first) == len(second) == 12 and not set(first) & set(second)
    too_many = tf.distribute.InputContext(num_input_pipelines=5, input_pipeline_id=0, num_replicas_in_sync=5)
    with pytest.raises(ValueError, match="input pipelines"):
        pipeline.referring_dataset(referring_shards, VOCAB, training=True, batch_size=1, input_context=too_many)


def test_training_batches_are_grouped_by_expression_length(referring_shards):
    boundaries = pipeline.DEFAULT_LENGTH_BOUNDARIES

    def buckets(group_by_length):
        dataset = pipeline.referring_dataset(
            referring_shards,
            VOCAB,
            training=True,
            repeat=False,
            batch_size=2,
            image_size=8,
            seed=0,
            group_by_length=group_by_length,
        )
        lengths = [np.count_nonzero(f["tokens"].numpy(), axis=1) for f, _ in dataset]
        return [set(np.searchsorted(boundaries, batch, side="right").tolist()) for batch in lengths]

    grouped = buckets(True)
    assert grouped and all(len(b) == 1 for b in grouped)
    assert sum(map(len, grouped)) >= 5  # several buckets occur
    assert any(len(b) > 1 for b in buckets(False) + buckets(False))  # without grouping, batches mix lengths


def test_bad_records_are_skipped_and_counted(tmp_path, caplog):
    rng = np.random.default_rng(4)
    image = _smooth_image(rng, 30, 40)
    mask = _ellipse_mask(30, 40)
    good = [_referring_record(image, mask, "the man on the left", i) for i in range(3)]
    png = _png(image)

    def raw(image_bytes, mask_array, expression, sent_id):
        return _raw_example(
            {
                "image/encoded": image_bytes,
                "image/height": 30,
                "image/width": 40,
                "image/filename": f"{sent_id}.png",
                "mask/encoded": records.encode_png(mask_array),
                "expression/raw": expression,
                "ref_id": sent_id,
                "sent_id": sent_id,
                "dataset": "test",
                "split": "val",
            }
        )

    bad = [
        raw(png[: len(png) // 2], mask, "the man", 10),  # truncated PNG
        raw(b"not an image at all", mask, "the man", 11),  # not an image
        b"\x00\x01 not an Example",  # malformed record
        raw(png, np.ones((31, 40), np.uint8), "the man", 12),  # mask size differs from the image
        raw(png, mask, "  .  ", 13),  # no tokens
        raw(png, mask, "", 14),  # no tokens
    ]
    path = _write(tmp_path / "bad.tfrecord", [good[0], *bad[:3], good[1], *bad[3:], good[2]])
    counter = pipeline.SkipCounter()
    with caplog.at_level("WARNING"):
        dataset = pipeline.referring_dataset(
            path, VOCAB, training=False, batch_size=2, image_size=16, skip_counter=counter
        )
        sent_ids = [int(s) for _, t in dataset for s in t["sent_id"].numpy()]
    assert sent_ids == [0, 1, 2]
    assert counter.counts == {
        "undecodable": 3,
        "size_mismatch": 1,
        "empty_expression": 2,
        "invalid_labels": 0,
        "too_large": 0,
        "invalid_mask": 0,
    }
    assert counter.total == 6
    assert (
        caplog.text.count("skipping record") == 6 and "bad.tfrecord" in caplog.text and "size_mismatch" in caplog.text
    )
    counter.reset()
    training = pipeline.referring_dataset(
        path, VOCAB, training=True, repeat=False, batch_size=1, image_size=16, skip_counter=counter, seed=0
    )
    assert len(list(training)) == 3 and counter.total == 6


def _mask_png(array: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_oversized_images_and_invalid_masks_are_skipped_without_decoding(tmp_path, caplog):
    """A decompression bomb (a 20000 x 20000 PNG header) is refused from its header (no multi-GB decode); a
    referring mask that is not one 8-bit channel of 0/1 or 0/255 is refused instead of being misread."""
    from test_image_header import png_header_only

    image = _smooth_image(np.random.default_rng(6), 30, 40)
    mask = _ellipse_mask(30, 40)  # 0/1
    png = _png(image)

    def raw(image_bytes, mask_bytes, sent_id):
        return _raw_example(
            {
                "image/encoded": image_bytes,
                "image/height": 30,
                "image/width": 40,
                "image/filename": f"{sent_id}.png",
                "mask/encoded": mask_bytes,
                "expression/raw": "the man",
                "ref_id": sent_id,
                "sent_id": sent_id,
                "dataset": "test",
                "split": "val",
            }
        )

    sixteen_bit = Image.fromarray(mask.astype(np.uint16))  # 0/1 in 16 bits: decode_png would make it all 0
    buffer = io.BytesIO()
    sixteen_bit.save(buffer, format="PNG")
    palette = Image.fromarray(mask).convert("P")
    palette_buffer = io.BytesIO()
    palette.save(palette_buffer, format="PNG")
    rgb = np.stack([mask * 255, np.zeros_like(mask), np.zeros_like(mask)], axis=-1).astype(np.uint8)
    records_ = [
        raw(png, records.encode_png(mask), 0),  # kept
        raw(png, records.encode_png(mask * 255), 1),  # 0/255: kept, read as 0/1
        raw(png_header_only(20000, 20000), records.encode_png(mask), 2),  # too_large
        raw(png, buffer.getvalue(), 3),  # 16-bit mask
        raw(png, _mask_png(rgb, "RGB"), 4),  # an RGB image as a mask
        raw(png, palette_buffer.getvalue(), 5),  # palette PNG
        raw(png, records.encode_png((mask + 1).astype(np.uint8)), 6),  # values 1/2: not 0/1 nor 0/255
        raw(png, png, 7),  # the image itself as a mask
    ]
    path = _write(tmp_path / "hostile.tfrecord", records_)
    counter = pipeline.SkipCounter()
    with caplog.at_level("WARNING"):
        dataset = pipeline.referring_dataset(
            path, VOCAB, training=False, batch_size=1, image_size=16, skip_counter=counter
        )
        kept = [(int(t["sent_id"][0]), t["original_mask"][0].numpy()) for _, t in dataset]
    assert [sent_id for sent_id, _ in kept] == [0, 1]
    for _, original in kept:
        np.testing.assert_array_equal(original[:30, :40], mask)
    assert counter.counts["too_large"] == 1 and counter.counts["invalid_mask"] == 5 and counter.total == 6, (
        counter.counts
    )
    assert "header 20000x20000" in caplog.text and "bit depth 16" in caplog.text and "colour type 2" in caplog.text

    parsing_path = _write(
        tmp_path / "hostile_parsing.tfrecord",
        [
            _raw_example(
                {
                    "image/encoded": png_header_only(20000, 20000),
                    "image/height": 20000,
                    "image/width": 20000,
                    "image/filename": "bomb.png",
                    "label/encoded": records.encode_png(mask),
                    "dataset": "test",
                    "split": "val",
                }
            )
        ],
    )
    counter = pipeline.SkipCounter()
    assert (
        list(
            pipeline.parsing_dataset(
                parsing_path, training=False, batch_size=1, num_classes=5, image_size=16, skip_counter=counter
            )
        )
        == []
    )
    assert counter.counts["too_large"] == 1


def test_truncated_shard_ends_early_in_training_and_raises_in_evaluation(tmp_path, referring_shards):
    data = open(referring_shards[0], "rb").read()
    truncated = tmp_path / "truncated.tfrecord"
    truncated.write_bytes(data[: len(data) - 100])  # the last of its 6 records is cut
    training = pipeline.referring_dataset(
        str(truncated), VOCAB, training=True, repeat=False, batch_size=1, image_size=8, seed=0
    )
    assert len(list(training)) == 5
    evaluation = pipeline.referring_dataset(str(truncated), VOCAB, training=False, batch_size=1, image_size=8)
    with pytest.raises(tf.errors.DataLossError):
        list(evaluation)


def test_parsing_bad_records_are_skipped_and_counted(tmp_path):
    rng = np.random.default_rng(5)
    image = _smooth_image(rng, 30, 20)
    labels = rng.integers(0, 18, (30, 20)).astype(np.uint8)

    def raw(image_bytes, label_array, name):
        return _raw_example(
            {
                "image/encoded": image_bytes,
                "image/height": 30,
                "image/width": 20,
                "image/filename": name,
                "label/encoded": records.encode_png(label_array),
                "dataset": "test",
                "split": "val",
            }
        )

    good = raw(_png(image), labels, "good")
    invalid = labels.copy()
    invalid[0, 0] = 40
    path = _write(
        tmp_path / "parsing.tfrecord",
        [
            good,
            raw(b"\x89PNG\r\n\x1a\n broken", labels, "corrupt"),
            raw(_png(image), labels[:, :19], "mismatch"),
            raw(_png(image), invalid, "invalid"),
            good,
        ],
    )
    counter = pipeline.SkipCounter()
    dataset = pipeline.parsing_dataset(
        path, training=False, batch_size=4, num_classes=18, image_size=16, skip_counter=counter
    )
    batches = list(dataset)
    assert sum(b[0]["image"].shape[0] for b in batches) == 2
    assert counter.counts == {
        "undecodable": 1,
        "size_mismatch": 1,
        "empty_expression": 0,
        "invalid_labels": 1,
        "too_large": 0,
        "invalid_mask": 0,
    }


@pytest.fixture(scope="module")
def parsing_shards(tmp_path_factory):
    directory = tmp_path_factory.mktemp("parsing")
    rng = np.random.default_rng(6)
    prefix = str(directory / "atr")
    with records.ShardedRecordWriter(
        prefix, 2, task="parsing", source="test", class_names=[str(i) for i in range(18)]
    ) as writer:
        for index in range(6):
            height, width = (int(v) for v in rng.integers(20, 50, 2))
            labels = rng.integers(0, 18, (height, width)).astype(np.uint8)
            labels[:2] = 255
            image = _png(_smooth_image(rng, height, width))
            writer.write(records.parsing_example(image, height, width, f"{index}.png", labels, 18, "test", "val"))
    return prefix


def test_parsing_batches_shapes_dtypes_and_evaluation_fields(parsing_shards):
    train = pipeline.parsing_dataset(
        parsing_shards, training=True, batch_size=2, num_classes=18, image_size=24, left_right_pairs=ATR_PAIRS, seed=0
    )
    features, targets = next(iter(train))
    assert features["image"].shape == (2, 24, 24, 3) and features["image"].dtype == tf.float32
    assert targets["labels"].shape == (2, 24, 24) and targets["labels"].dtype == tf.int32
    assert set(np.unique(targets["labels"].numpy())) <= set(range(18)) | {255}

    evaluation = pipeline.parsing_dataset(
        parsing_shards, training=False, batch_size=3, num_classes=18, image_size=24, exact_resize=True
    )
    source = [
        tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(pipeline.resolve_files(parsing_shards))
    ]
    rows = [(f, t, i) for f, t in evaluation for i in range(f["image"].shape[0])]
    assert len(rows) == 6
    written_order = [source[0], source[3], source[1], source[4], source[2], source[5]]  # example i is in shard i % 2
    for (features, targets, i), example, index in zip(rows, written_order, range(6)):
        feature = example.features.feature
        assert feature["image/filename"].bytes_list.value[0] == f"{index}.png".encode()  # evaluation keeps the order
        image = np.asarray(Image.open(io.BytesIO(feature["image/encoded"].bytes_list.value[0])))
        labels = np.asarray(Image.open(io.BytesIO(feature["label/encoded"].bytes_list.value[0])))
        padded, placement = resize_and_pad(image, 24)
        expected_vgg = keras.applications.vgg16.preprocess_input(padded.astype(np.float32))
        np.testing.assert_allclose(features["image"][i].numpy(), expected_vgg, atol=1e-5)
        top, left, new_h, new_w = placement
        expected_labels = np.full((24, 24), 255, np.int32)
        resized = np.asarray(Image.fromarray(labels).resize((new_w, new_h), Image.NEAREST))
        expected_labels[top : top + new_h, left : left + new_w] = resized
        np.testing.assert_array_equal(targets["labels"][i].numpy(), expected_labels)
        height, width = targets["original_size"][i].numpy()
        np.testing.assert_array_equal(targets["original_labels"][i, :height, :width].numpy(), labels)
        assert (targets["original_labels"][i, height:].numpy() == 255).all()
        assert tuple(targets["placement"][i].numpy()) == placement


def test_parsing_dataset_flip_swaps_labels_end_to_end(tmp_path):
    image, labels = _lr_scene(16)
    prefix = str(tmp_path / "flip")
    with records.ShardedRecordWriter(prefix, 1, task="parsing", source="test") as writer:
        for index in range(8):
            writer.write(records.parsing_example(_png(image), 16, 16, f"{index}.png", labels, 18, "test", "train"))
    dataset = pipeline.parsing_dataset(
        prefix,
        training=True,
        repeat=False,
        batch_size=8,
        num_classes=18,
        image_size=16,
        left_right_pairs=ATR_PAIRS,
        scale_range=(1.0, 1.0),
        seed=3,
    )
    features, targets = next(iter(dataset))
    flipped = features["image"].numpy()[:, 0, 0, 2] > features["image"].numpy()[:, 0, -1, 2]  # BGR: R (column) is 2
    out = targets["labels"].numpy()
    for i in range(8):
        expected = pipeline.flip_swap_table(ATR_PAIRS, 18)[labels[:, ::-1]] if flipped[i] else labels
        np.testing.assert_array_equal(out[i], expected)
    assert 0 < flipped.sum() < 8


def _jpeg(array: np.ndarray, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def test_jpeg_records_give_the_decoded_jpeg_pixels(tmp_path):
    """Records whose image is a JPEG (the converters store a source's 8-bit RGB JPEG as it is,
    `image_io.decode_image_bytes`) give both datasets the pixels `tf.io.decode_jpeg` decodes from it (libjpeg's
    fast integer DCT, also what the SavedModel decodes), resized and normalised like a PNG's."""
    from tf_recurrent_seg.data.image_io import decode_image_bytes

    rng = np.random.default_rng(8)
    shapes = [(24, 24), (30, 17)]  # at the model size (no resampling), and resized and padded
    sources = [_smooth_image(rng, *shape) for shape in shapes]
    stored = []
    for source in sources:
        data, pillow_pixels = decode_image_bytes(_jpeg(source))
        assert data[:3] == b"\xff\xd8\xff"  # kept as the JPEG it was
        decoded = tf.io.decode_jpeg(data, channels=3).numpy()
        assert np.abs(decoded.astype(int) - source).mean() > 0.5  # lossy: the expectation is the decoded JPEG
        assert np.abs(decoded.astype(int) - pillow_pixels).max() <= 4  # Pillow's decode, to a few grey levels
        stored.append((data, decoded))
    referring = _write(
        tmp_path / "jpeg_ref.tfrecord",
        [
            records.referring_example(
                data,
                *decoded.shape[:2],
                f"{i}.jpg",
                _ellipse_mask(*decoded.shape[:2]),
                "the man on the left",
                i,
                i,
                "test",
                "val",
            ).SerializeToString()
            for i, (data, decoded) in enumerate(stored)
        ],
    )
    parsing = _write(
        tmp_path / "jpeg_par.tfrecord",
        [
            records.parsing_example(
                data, *decoded.shape[:2], f"{i}.jpg", np.full(decoded.shape[:2], i, np.uint8), 18, "test", "val"
            ).SerializeToString()
            for i, (data, decoded) in enumerate(stored)
        ],
    )
    referring_rows = [
        (f["image"][0].numpy(), t)
        for f, t in pipeline.referring_dataset(
            referring, VOCAB, training=False, batch_size=1, image_size=24, exact_resize=True
        )
    ]
    parsing_rows = [
        (f["image"][0].numpy(), t)
        for f, t in pipeline.parsing_dataset(
            parsing, training=False, batch_size=1, num_classes=18, image_size=24, exact_resize=True
        )
    ]
    assert len(referring_rows) == len(parsing_rows) == len(stored)
    for (data, decoded), (ref_image, ref_targets), (par_image, par_targets) in zip(
        stored, referring_rows, parsing_rows
    ):
        padded, placement = resize_and_pad(decoded, 24)
        np.testing.assert_array_equal(ref_image, caffe_preprocess(padded))
        np.testing.assert_allclose(
            par_image, keras.applications.vgg16.preprocess_input(padded.astype(np.float32)), atol=1e-5
        )
        for targets in (ref_targets, par_targets):
            assert tuple(targets["placement"][0].numpy()) == placement
            assert tuple(targets["original_size"][0].numpy()) == decoded.shape[:2]
    np.testing.assert_array_equal(
        referring_rows[0][0], caffe_preprocess(stored[0][1])
    )  # 24 x 24: the pixels as decoded


def test_resolve_files(referring_shards, parsing_shards, tmp_path):
    assert pipeline.resolve_files(parsing_shards) == records.shard_paths(parsing_shards, 2)  # via the manifest
    pattern = os.path.join(os.path.dirname(referring_shards[0]), "ref-*.tfrecord")
    assert pipeline.resolve_files(pattern) == referring_shards
    with pytest.raises(FileNotFoundError, match="no TFRecord files"):
        pipeline.resolve_files(str(tmp_path / "missing-*"))


def test_argument_checks(referring_shards):
    with pytest.raises(ValueError, match="batch_size"):
        pipeline.referring_dataset(referring_shards, VOCAB, training=True, batch_size=0)
    with pytest.raises(ValueError, match="normalization"):
        pipeline.referring_dataset(referring_shards, VOCAB, training=True, batch_size=1, normalization="torch")
    with pytest.raises(ValueError, match="scale_range"):
        pipeline.parsing_dataset(referring_shards, training=True, batch_size=1, num_classes=18, scale_range=(1.5, 0.5))
