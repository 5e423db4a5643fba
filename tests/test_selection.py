from __future__ import annotations

import json
import os
import random
import tempfile
import unittest

import numpy as np
import torch
from parameterized import parameterized

from monai_unlearn.core.forget_selector import parse_forget_selector
from monai_unlearn.core.selection import (
    ForgetSelectionError,
    normalize_label,
    read_ids_file,
    select_forget,
    select_forget_indices,
)


def make_datalist(n: int = 12) -> list[dict]:
    devices = ["scannerA", "scannerB", "scannerC"]
    return [
        {"image": f"imgs/case{i:02d}.nii.gz", "label": i % 4, "device": devices[i % 3], "site": i % 2} for i in range(n)
    ]


class TestNormalizeLabel(unittest.TestCase):
    @parameterized.expand(
        [
            (3, 3),
            (np.int64(2), 2),
            (1.0, 1),
            ("4", 4),
            (np.array(5), 5),
            (np.array([5]), 5),
            (torch.tensor(2), 2),
            (torch.tensor([[1]]), 1),
            ([7], 7),
            ([0, 0, 1, 0], 2),
            (np.array([1, 0, 0]), 0),
            (torch.tensor([0.0, 1.0]), 1),
        ]
    )
    def test_forms(self, label, expected):
        self.assertEqual(normalize_label(label), expected)

    @parameterized.expand([("seg/case0.nii.gz",), ([0, 1, 1],), ([0, 2, 0],), (1.5,), (True,), (None,)])
    def test_rejected(self, label):
        with self.assertRaises(ForgetSelectionError):
            normalize_label(label)


class TestSelectForget(unittest.TestCase):
    def assert_split(self, datalist, forget, remain):
        self.assertEqual(len(forget) + len(remain), len(datalist))
        ids_f = [id(x) for x in forget]
        ids_r = [id(x) for x in remain]
        self.assertFalse(set(ids_f) & set(ids_r))
        order = {id(x): i for i, x in enumerate(datalist)}
        self.assertEqual([order[i] for i in ids_f], sorted(order[i] for i in ids_f))
        self.assertEqual([order[i] for i in ids_r], sorted(order[i] for i in ids_r))
        self.assertEqual(set(ids_f) | set(ids_r), set(order))

    def test_by_label(self):
        dl = make_datalist()
        forget, remain = select_forget(dl, label=3)
        self.assert_split(dl, forget, remain)
        self.assertEqual(
            [d["image"] for d in forget], ["imgs/case03.nii.gz", "imgs/case07.nii.gz", "imgs/case11.nii.gz"]
        )
        self.assertTrue(all(d["label"] != 3 for d in remain))

    def test_by_label_list_and_forms(self):
        dl = make_datalist()
        forget, remain = select_forget(dl, label=[1, 2])
        self.assertEqual(len(forget), 6)
        self.assertTrue(all(d["label"] in (1, 2) for d in forget))
        onehot = [{"image": str(i), "label": np.eye(3, dtype=int)[i % 3].tolist()} for i in range(6)]
        forget, remain = select_forget(onehot, label=torch.tensor(2))
        self.assertEqual([d["image"] for d in forget], ["2", "5"])
        tensors = [{"image": str(i), "label": torch.tensor([i % 2])} for i in range(4)]
        forget, _ = select_forget(tensors, label=np.array(1))
        self.assertEqual([d["image"] for d in forget], ["1", "3"])

    def test_fraction_seeded_and_first_k(self):
        dl = make_datalist(40)  # 10 items per class
        f1, r1 = select_forget(dl, label=0, fraction=0.3, seed=5)
        f2, _ = select_forget(dl, label=0, fraction=0.3, seed=5)
        self.assert_split(dl, f1, r1)
        self.assertEqual(f1, f2)
        self.assertEqual(len(f1), 3)
        self.assertTrue(all(d["label"] == 0 for d in f1))
        others = {tuple(d["image"] for d in select_forget(dl, label=0, fraction=0.3, seed=s)[0]) for s in range(8)}
        self.assertGreater(len(others), 1)
        first, _ = select_forget(dl, label=0, fraction=0.3, first_k=True)
        self.assertEqual([d["image"] for d in first], [f"imgs/case{i:02d}.nii.gz" for i in (0, 4, 8)])
        counted, _ = select_forget(dl, label=0, count=2, first_k=True)
        self.assertEqual([d["image"] for d in counted], ["imgs/case00.nii.gz", "imgs/case04.nii.gz"])
        tiny, _ = select_forget(dl, label=0, fraction=0.01)
        self.assertEqual(len(tiny), 1)

    def test_fraction_alone_is_random_subset(self):
        dl = make_datalist(20)
        forget, remain = select_forget(dl, fraction=0.25, seed=1)
        self.assert_split(dl, forget, remain)
        self.assertEqual(len(forget), 5)

    def test_key_value(self):
        dl = make_datalist()
        forget, remain = select_forget(dl, key="device", value="scannerA")
        self.assert_split(dl, forget, remain)
        self.assertTrue(all(d["device"] == "scannerA" for d in forget))
        self.assertTrue(all(d["device"] != "scannerA" for d in remain))
        forget, _ = select_forget(dl, key="device", value=["scannerA", "scannerC"])
        self.assertEqual(len(forget), 8)
        # numeric metadata matches its string form and the other way round
        forget_s, _ = select_forget(dl, key="site", value="1")
        forget_i, _ = select_forget(dl, key="site", value=1)
        self.assertEqual(forget_s, forget_i)
        self.assertEqual(len(forget_s), 6)
        strs = [{"image": str(i), "grade": str(i % 3)} for i in range(6)]
        self.assertEqual(len(select_forget(strs, key="grade", value=2)[0]), 2)

    def test_key_missing_on_some_items(self):
        dl = make_datalist(6)
        dl[0] = {"image": "x", "label": 0}
        forget, remain = select_forget(dl, key="device", value="scannerB")
        self.assertNotIn(dl[0], forget)
        self.assertIn(dl[0], remain)

    def test_predicate_and_combination(self):
        dl = make_datalist(24)
        forget, remain = select_forget(dl, predicate=lambda d: d["site"] == 0)
        self.assert_split(dl, forget, remain)
        self.assertEqual(len(forget), 12)
        forget, remain = select_forget(dl, label=2, key="device", value="scannerC")
        self.assert_split(dl, forget, remain)
        self.assertTrue(all(d["label"] == 2 and d["device"] == "scannerC" for d in forget))
        expected = [d for d in dl if d["label"] == 2 and d["device"] == "scannerC"]
        self.assertEqual(forget, expected)
        forget, _ = select_forget(dl, label=[0, 2], predicate=lambda d: d["site"] == 0, fraction=0.5, seed=3)
        self.assertTrue(all(d["label"] in (0, 2) for d in forget))
        self.assertEqual(len(forget), 6)

    def test_ids_inline_and_normpath(self):
        dl = make_datalist()
        forget, remain = select_forget(dl, ids=["./imgs/case01.nii.gz", "imgs//case05.nii.gz"])
        self.assert_split(dl, forget, remain)
        self.assertEqual([d["image"] for d in forget], ["imgs/case01.nii.gz", "imgs/case05.nii.gz"])
        forget, _ = select_forget(dl, ids="imgs/case02.nii.gz")
        self.assertEqual(len(forget), 1)
        forget, _ = select_forget(dl, ids=["1"], id_key="site")
        self.assertEqual(len(forget), 6)

    def test_ids_files(self):
        dl = make_datalist()
        with tempfile.TemporaryDirectory() as tmp:
            txt = os.path.join(tmp, "ids.txt")
            with open(txt, "w") as f:
                f.write("# forget these\n\nimgs/case00.nii.gz\n  imgs/case09.nii.gz  \n# end\n")
            self.assertEqual(read_ids_file(txt), ["imgs/case00.nii.gz", "imgs/case09.nii.gz"])
            forget, _ = select_forget(dl, ids_file=txt)
            self.assertEqual([d["image"] for d in forget], ["imgs/case00.nii.gz", "imgs/case09.nii.gz"])
            js = os.path.join(tmp, "ids.json")
            with open(js, "w") as f:
                json.dump(["imgs/case03.nii.gz"], f)
            self.assertEqual(len(select_forget(dl, ids_file=js)[0]), 1)
            with open(js, "w") as f:
                json.dump([{"image": "imgs/case03.nii.gz", "label": 3}, {"image": "imgs/case04.nii.gz"}], f)
            forget, _ = select_forget(dl, ids_file=js, label=3)
            self.assertEqual([d["image"] for d in forget], ["imgs/case03.nii.gz"])
            with open(js, "w") as f:
                json.dump({"image": "a"}, f)
            with self.assertRaisesRegex(ForgetSelectionError, "JSON list"):
                select_forget(dl, ids_file=js)
            with open(js, "w") as f:
                json.dump([{"path": "a"}], f)
            with self.assertRaisesRegex(ForgetSelectionError, "no key 'image'"):
                select_forget(dl, ids_file=js)
            with self.assertRaisesRegex(ForgetSelectionError, "does not exist"):
                select_forget(dl, ids_file=os.path.join(tmp, "nope.txt"))

    def test_selection_is_same_objects(self):
        dl = make_datalist()
        forget, _ = select_forget(dl, label=1)
        self.assertIs(forget[0], dl[1])

    @parameterized.expand(
        [
            ("empty_datalist", [], {"label": 1}, "empty"),
            ("no_criterion", None, {}, "no selection criterion"),
            ("only_seed", None, {"seed": 3}, "no selection criterion"),
            ("empty_forget", None, {"label": 9}, "forget set is empty"),
            ("everything", None, {"key": "image", "value": [f"imgs/case{i:02d}.nii.gz" for i in range(12)]}, "all 12"),
            ("fraction_all", None, {"fraction": 1.0}, "all 12"),
            (
                "unknown_key",
                None,
                {"key": "scanner", "value": "A"},
                r"'scanner'.*keys present: \['device', 'image', 'label', 'site'\]",
            ),
            ("unknown_label_key", None, {"label": 1, "label_key": "class"}, "'class'"),
            ("label_range", None, {"label": 5, "num_classes": 4}, r"0\.\.3"),
            ("label_negative", None, {"label": -1, "num_classes": 4}, r"0\.\.3"),
            (
                "ids_missing",
                None,
                {"ids": ["imgs/case00.nii.gz"] + [f"m{i}" for i in range(7)]},
                r"7 of 8.*'m0'.*'m4'.*and 2 more",
            ),
            ("fraction_zero", None, {"label": 1, "fraction": 0.0}, r"\(0, 1\]"),
            ("fraction_big", None, {"label": 1, "fraction": 1.5}, r"\(0, 1\]"),
            ("fraction_and_count", None, {"label": 1, "fraction": 0.5, "count": 1}, "not both"),
            ("count_too_big", None, {"label": 1, "count": 4}, "larger than"),
            ("count_zero", None, {"label": 1, "count": 0}, "positive"),
            ("first_k_alone", None, {"label": 1, "first_k": True}, "first_k"),
            ("key_without_value", None, {"key": "device"}, "together"),
            ("ids_and_file", None, {"ids": ["a"], "ids_file": "b.txt"}, "not both"),
            ("empty_label_list", None, {"label": []}, "empty collection"),
            ("not_a_list", {"image": "a"}, {"label": 1}, "sequence of dicts"),
        ]
    )
    def test_errors(self, _, datalist, kwargs, pattern):
        dl = make_datalist() if datalist is None else datalist
        with self.assertRaisesRegex(ForgetSelectionError, pattern):
            select_forget(dl, **kwargs)

    def test_error_is_value_error(self):
        with self.assertRaises(ValueError):
            select_forget(make_datalist(), label=42)

    def test_segmentation_labels_rejected_for_label_mode(self):
        dl = [{"image": f"i{i}", "label": f"seg{i}.nii.gz"} for i in range(3)]
        with self.assertRaisesRegex(ForgetSelectionError, "key="):
            select_forget(dl, label=1)
        self.assertEqual(len(select_forget(dl, ids=["i1"])[0]), 1)


class TestSelectForgetIndices(unittest.TestCase):
    def test_basic(self):
        labels = [0, 1, 2, 1, 0, 1]
        self.assertEqual(select_forget_indices(labels, label=1), ([1, 3, 5], [0, 2, 4]))
        self.assertEqual(select_forget_indices(labels, label=[0, 2]), ([0, 2, 4], [1, 3, 5]))
        self.assertEqual(select_forget_indices(labels, label=1, count=2, first_k=True), ([1, 3], [0, 2, 4, 5]))

    def test_tensor_and_onehot(self):
        idx = torch.tensor([2, 0, 2, 1])
        self.assertEqual(select_forget_indices(idx, label=2)[0], [0, 2])
        onehot = torch.nn.functional.one_hot(idx, 3)
        self.assertEqual(select_forget_indices(onehot, label=2)[0], [0, 2])
        self.assertEqual(select_forget_indices(np.asarray(idx), label=0)[0], [1])

    def test_fraction_deterministic(self):
        labels = [i % 5 for i in range(200)]
        a = select_forget_indices(labels, label=4, fraction=0.25, seed=7)
        b = select_forget_indices(labels, label=4, fraction=0.25, seed=7)
        self.assertEqual(a, b)
        self.assertEqual(len(a[0]), 10)
        self.assertTrue(all(labels[i] == 4 for i in a[0]))
        self.assertEqual(sorted(a[0] + a[1]), list(range(200)))

    @parameterized.expand(
        [
            ([], {"label": 1}, "empty"),
            ([0, 1], {}, "no selection criterion"),
            ([0, 1], {"label": 2, "num_classes": 2}, r"0\.\.1"),
            ([0, 1], {"label": 3}, "empty"),
            ([1, 1], {"label": 1}, "all 2"),
            ([0, 1], {"label": 1, "fraction": -0.1}, r"\(0, 1\]"),
        ]
    )
    def test_errors(self, labels, kwargs, pattern):
        with self.assertRaisesRegex(ForgetSelectionError, pattern):
            select_forget_indices(labels, **kwargs)


class TestParseForgetSelector(unittest.TestCase):
    @parameterized.expand(
        [
            ("label=3", {"label": 3}),
            ("label=3,fraction=0.1,seed=1", {"label": 3, "fraction": 0.1, "seed": 1}),
            (" label = 1|4 , count=2 , first_k ", {"label": [1, 4], "count": 2, "first_k": True}),
            ("device=scannerA", {"key": "device", "value": "scannerA"}),
            (
                "device=scannerA|scannerB,first_k=no,fraction=1",
                {"key": "device", "value": ["scannerA", "scannerB"], "first_k": False, "fraction": 1.0},
            ),
            ("site=3", {"key": "site", "value": "3"}),
            ("@lists/forget.txt", {"ids_file": "lists/forget.txt"}),
            ("ids=a.nii.gz|b.nii.gz,id_key=image", {"ids": ["a.nii.gz", "b.nii.gz"], "id_key": "image"}),
            ("label=2,num_classes=10,label_key=y", {"label": 2, "num_classes": 10, "label_key": "y"}),
        ]
    )
    def test_parse(self, text, expected):
        self.assertEqual(parse_forget_selector(text), expected)

    def test_existing_file_path(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "forget.json")
            with open(path, "w") as f:
                json.dump(["imgs/case02.nii.gz"], f)
            kwargs = parse_forget_selector(path)
            self.assertEqual(kwargs, {"ids_file": path})
            forget, _ = select_forget(make_datalist(), **kwargs)
            self.assertEqual(len(forget), 1)

    def test_round_trip_numeric_value(self):
        dl = make_datalist()
        forget, _ = select_forget(dl, **parse_forget_selector("site=1,label=3"))
        self.assertEqual([d["image"] for d in forget], [f"imgs/case{i:02d}.nii.gz" for i in (3, 7, 11)])

    @parameterized.expand(
        [
            ("",),
            ("   ",),
            ("@",),
            ("label",),
            ("label=",),
            ("=3",),
            ("label=3,,seed=1",),
            ("label=three",),
            ("fraction=lots",),
            ("seed=1.5",),
            ("first_k=maybe",),
            ("label=1,label=2",),
            ("device=a,site=b",),
        ]
    )
    def test_parse_errors(self, text):
        with self.assertRaises(ForgetSelectionError):
            parse_forget_selector(text)


class TestSelectByPosition(unittest.TestCase):
    """Data without paths (in-memory datasets) is forgotten by item position."""

    def setUp(self):
        self.items = [{"image": torch.zeros(1) + i, "label": i % 3} for i in range(10)]

    def test_positions_inline_and_with_other_criteria(self):
        forget, remain = select_forget(self.items, **parse_forget_selector("index=3,7,9"))
        self.assertEqual([int(it["image"]) for it in forget], [3, 7, 9])
        self.assertEqual(len(remain), 7)
        forget, _ = select_forget(self.items, index=[3, 4, 5], label=1)  # criteria combine (AND)
        self.assertEqual([int(it["image"]) for it in forget], [4])

    def test_positions_from_a_file(self):
        with tempfile.TemporaryDirectory() as folder:
            text, listed = os.path.join(folder, "withdrawn.txt"), os.path.join(folder, "withdrawn.json")
            with open(text, "w") as f:
                f.write("# withdrawn consent\n2\n\n8\n")
            with open(listed, "w") as f:
                json.dump([1, 6], f)
            self.assertEqual([int(it["image"]) for it in select_forget(self.items, index_file=text)[0]], [2, 8])
            self.assertEqual([int(it["image"]) for it in
                              select_forget(self.items, **parse_forget_selector(f"index_file={listed}"))[0]], [1, 6])

    def test_bad_positions(self):
        with self.assertRaisesRegex(ForgetSelectionError, r"position 10, outside the datalist's 0..9"):
            select_forget(self.items, index=[2, 10])
        with self.assertRaisesRegex(ForgetSelectionError, "'x', which is not an item position"):
            select_forget(self.items, index=["x"])
        with self.assertRaisesRegex(ForgetSelectionError, "either `index` or `index_file`"):
            select_forget(self.items, index=[1], index_file="f.txt")
        with self.assertRaisesRegex(ForgetSelectionError, "expects an integer"):
            parse_forget_selector("index=1,two")


class TestSelectionFuzz(unittest.TestCase):
    """Seeded random datalists and selectors: every outcome is a correct split or a documented error."""

    def test_fuzz(self):
        rng = random.Random(1234)
        outcomes = {"split": 0, "error": 0}
        for case in range(400):
            n = rng.randint(0, 15)
            n_classes = rng.randint(1, 4)
            label_form = rng.choice(["int", "tensor", "onehot", "str"])
            datalist = []
            for i in range(n):
                c = rng.randrange(n_classes)
                lab = {
                    "int": c,
                    "tensor": torch.tensor([c]),
                    "onehot": [int(j == c) for j in range(max(n_classes, 2))],
                    "str": str(c),
                }[label_form]
                item = {"image": f"d/{i}.nii", "label": lab}
                if rng.random() < 0.9:
                    item["device"] = rng.choice(["A", "B", 3])
                datalist.append(item)
            kwargs: dict = {}
            if rng.random() < 0.6:
                kwargs["label"] = rng.choice(
                    [rng.randrange(-1, n_classes + 1), [rng.randrange(n_classes), rng.randrange(n_classes)]]
                )
            if rng.random() < 0.4:
                kwargs["key"] = rng.choice(["device", "device", "site"])
                kwargs["value"] = rng.choice(["A", ["A", "B"], "3", 3])
            if rng.random() < 0.2:
                kwargs["ids"] = [f"./d/{rng.randrange(max(n, 1) + 1)}.nii" for _ in range(rng.randint(1, 3))]
            if rng.random() < 0.1:
                kwargs["predicate"] = lambda d: d["image"].endswith(("1.nii", "2.nii"))
            if rng.random() < 0.4:
                kwargs["fraction"] = rng.choice([0.0, 0.2, 0.5, 1.0, 1.2])
            elif rng.random() < 0.2:
                kwargs["count"] = rng.randint(0, 4)
            if rng.random() < 0.2:
                kwargs["first_k"] = True
            if rng.random() < 0.3:
                kwargs["num_classes"] = n_classes
            kwargs["seed"] = case
            try:
                forget, remain = select_forget(datalist, **kwargs)
            except ForgetSelectionError:
                outcomes["error"] += 1
                continue
            outcomes["split"] += 1
            with self.subTest(case=case, kwargs=kwargs):
                self._check(datalist, forget, remain, kwargs)
                again = select_forget(datalist, **kwargs)
                self.assertEqual(again, (forget, remain))
        self.assertGreater(outcomes["split"], 50)
        self.assertGreater(outcomes["error"], 50)

    def _criterion(self, item: dict, kwargs: dict) -> bool:
        ok = True
        if "label" in kwargs:
            wanted = kwargs["label"] if isinstance(kwargs["label"], list) else [kwargs["label"]]
            ok = ok and normalize_label(item["label"]) in wanted
        if "key" in kwargs:
            accepted = kwargs["value"] if isinstance(kwargs["value"], list) else [kwargs["value"]]
            ok = ok and kwargs["key"] in item and str(item[kwargs["key"]]) in [str(v) for v in accepted]
        if "ids" in kwargs:
            ok = ok and item["image"] in [os.path.normpath(i) for i in kwargs["ids"]]
        if "predicate" in kwargs:
            ok = ok and kwargs["predicate"](item)
        return ok

    def _check(self, datalist, forget, remain, kwargs):
        self.assertTrue(forget)
        self.assertTrue(remain)
        self.assertEqual(len(forget) + len(remain), len(datalist))
        pos = {id(x): i for i, x in enumerate(datalist)}
        fpos, rpos = [pos[id(x)] for x in forget], [pos[id(x)] for x in remain]
        self.assertEqual(fpos, sorted(fpos))
        self.assertEqual(rpos, sorted(rpos))
        self.assertEqual(set(fpos) | set(rpos), set(range(len(datalist))))
        self.assertFalse(set(fpos) & set(rpos))
        for item in forget:
            self.assertTrue(self._criterion(item, kwargs))
        partial = "fraction" in kwargs or "count" in kwargs
        if not partial:
            for item in remain:
                self.assertFalse(self._criterion(item, kwargs))
        elif "count" in kwargs:
            self.assertEqual(len(forget), kwargs["count"])


if __name__ == "__main__":
    unittest.main()
