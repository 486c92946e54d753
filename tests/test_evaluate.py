import numpy as np
import pytest
import tensorflow as tf

from dmi_tf.data.dataset import SplitData
from dmi_tf.data.pipeline import evaluation_dataset
from dmi_tf.data.splits import load_dataset
from dmi_tf.errors import ConfigError, DataError
from dmi_tf.evaluate import evaluate, evaluate_per_user
from dmi_tf.models.most_popular import MostPopular

# MostPopular ranks items 1 > 2 > 3 > 4; items 1, 2 are category 0 and 3, 4 category 1.
COUNTS = np.array([0, 5, 4, 3, 2])
CATEGORIES = np.array([-1, 0, 0, 1, 1])


def users():
    # History (first 80%) then targets: user 0's targets are [3, 4], user 1's are [1, 2].
    return SplitData.from_sequences([0, 1], [[1, 2, 1, 2, 1, 2, 1, 2, 3, 4],
                                             [3, 4, 3, 4, 3, 4, 3, 4, 1, 2]])


def test_plain_merge_metrics_and_diversity():
    result = evaluate(MostPopular(COUNTS), evaluation_dataset(users(), 8, 2), cutoffs=[2],
                      categories=CATEGORIES)
    # Both users get [1, 2]: user 0 hits nothing, user 1 hits both targets.
    assert result["recall@2"] == pytest.approx(0.5)
    assert result["hit_rate@2"] == pytest.approx(0.5)
    assert result["diversity@2"] == pytest.approx(0.0)  # 1 and 2 share category 0
    assert result["users"] == 2


class TwoInterests:
    """Interest A scores items 1 and 2 (5, 4); interest B scores items 3 and 4 (3, 2)."""

    def interests(self, history, training=False):
        return tf.tile(tf.constant([[[1.0, 0.0], [0.0, 1.0]]]), [tf.shape(history)[0], 1, 1])

    def candidate_embeddings(self):
        return tf.constant([[0.0, 0.0], [5.0, 0.0], [4.0, 0.0], [0.0, 3.0], [0.0, 2.0]])


def test_controllable_aggregation_trades_accuracy_for_diversity():
    data = evaluation_dataset(users(), 8, 2)
    plain = evaluate(TwoInterests(), data, cutoffs=[2], categories=CATEGORIES)
    # Merge by score over the candidates {1: 5, 2: 4, 3: 3, 4: 2}: [1, 2] for both users.
    assert plain["diversity@2"] == pytest.approx(0.0)
    assert plain["recall@2"] == pytest.approx(0.5)  # user 0: 0 of [3, 4]; user 1: both of [1, 2]
    diverse = evaluate(TwoInterests(), data, cutoffs=[2], categories=CATEGORIES,
                       diversity_weight=10.0)
    # Item 1 (5) first; then item 3 (3 + 10·1) beats item 2 (4 + 10·0): [1, 3].
    assert diverse["diversity@2"] == pytest.approx(1.0)
    assert diverse["recall@2"] == pytest.approx(0.5)  # one target each
    assert diverse["hit_rate@2"] == pytest.approx(1.0)


def test_per_user_values_are_each_users_own_and_average_to_evaluate():
    data = evaluation_dataset(users(), 8, 1)  # one user per batch: the arrays are concatenated
    per_user = evaluate_per_user(MostPopular(COUNTS), data, cutoffs=[2])
    # Both users get [1, 2]: user 0's targets are [3, 4], user 1's [1, 2].
    np.testing.assert_array_equal(per_user["hit_rate@2"], [0.0, 1.0])
    np.testing.assert_array_equal(per_user["recall@2"], [0.0, 1.0])
    mean = evaluate(MostPopular(COUNTS), data, cutoffs=[2])
    for name, values in per_user.items():
        assert mean[name] == pytest.approx(values.mean())


def test_diversity_weight_without_categories_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"item_cate\.txt"):
        evaluate(MostPopular(COUNTS), evaluation_dataset(users(), 8, 2), cutoffs=[2],
                 diversity_weight=1.0)


def test_empty_split_is_a_clear_error():
    empty = SplitData.from_sequences([], [])
    with pytest.raises(DataError, match="no users"):
        evaluate(MostPopular(COUNTS), evaluation_dataset(empty, 8, 2), cutoffs=[2])
    with pytest.raises(DataError, match="no users"):
        evaluate_per_user(MostPopular(COUNTS), evaluation_dataset(empty, 8, 2), cutoffs=[2])


def write_folder(tmp_path, categories_text):
    for split, user in (("train", 0), ("valid", 1), ("test", 2)):
        (tmp_path / f"{split}.txt").write_text(
            "".join(f"{user},{i},{p}\n" for p, i in enumerate([1, 2, 3, 1, 2, 3])))
    if categories_text is not None:
        (tmp_path / "item_cate.txt").write_text(categories_text)
    return tmp_path


def test_item_categories_load_from_the_split_folder(tmp_path):
    dataset = load_dataset(write_folder(tmp_path, "1,7\n3,2\n"))
    np.testing.assert_array_equal(dataset.item_categories, [-1, 7, -1, 2])


def test_no_category_file_means_no_categories(tmp_path):
    assert load_dataset(write_folder(tmp_path, None)).item_categories is None


@pytest.mark.parametrize("text", ["1,7,3\n", "9,1\n", "1,x\n", "0,1\n"])
def test_malformed_category_line_names_file_and_line(tmp_path, text):
    with pytest.raises(DataError, match=r"item_cate\.txt:1: malformed"):
        load_dataset(write_folder(tmp_path, text))
