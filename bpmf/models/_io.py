"""Saving and loading fitted models: one file format, one place.

A saved model is a single file with the extension ``.bpmf``: a zip archive (stored, not
compressed) of a `zarr <https://zarr.dev>`_ store of the model's ArviZ ``DataTree``
(``idata_``). The root group's attributes record

- ``bpmf_format`` (``"bpmf-model"``) and ``bpmf_format_version`` (an integer, see
  :data:`FORMAT_VERSION`): what the file is and how it is laid out;
- ``bpmf_version``: the bpmf release that wrote it;
- ``bpmf_model`` and ``bpmf_model_module``: the class of the model (its name, and the module
  that defined it);
- ``bpmf_params``: the constructor arguments (JSON);
- the id maps, the rating scale and the number of training ratings;
- ``bpmf_state``: every other fitted attribute (JSON; arrays are stored as variables of a
  ``bpmf_state`` group of the store and referenced from the JSON).

:class:`ModelIO` gives a model ``save`` and the class method ``load``; :func:`load` reads a
file of any model class, chosen from the file's own metadata. A file of an unknown or newer
format, or of another model class than the one asked for, is refused with a
:class:`~bpmf.ModelFileError` that says so. Saving writes a temporary file in the target's
folder and renames it over the target, so an interrupted save never damages an earlier file.

Which fitted state is saved
---------------------------
Fitted attributes are the public attributes whose names end in ``_`` (scikit-learn's
convention). ``idata_``, the id maps (``user_index_``, ``item_index_``), ``scale_`` and
``n_train_`` are written by this module itself; every other fitted attribute is returned by
:meth:`ModelIO._extra_state` and given back to :meth:`ModelIO._restore_state` on load. Their
defaults save and restore all of them, provided each value is built from ``None``, booleans,
numbers, strings, lists, tuples, dicts with string keys, numpy scalars and arrays (numbers,
booleans or strings) and pandas ``Index`` objects. A subclass whose state needs something
else overrides the two methods (for example to rebuild a value from ``idata_`` instead of
storing it twice).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import secrets
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from bpmf._exceptions import DataError, ModelFileError
from bpmf._version import __version__

__all__ = ["FILE_EXTENSION", "FORMAT_VERSION", "ModelIO", "load", "read_model_info"]

#: The documented extension of a saved model (``save`` does not enforce it).
FILE_EXTENSION = ".bpmf"
#: The layout written by this version of bpmf; files with a larger number are refused.
FORMAT_VERSION = 2
#: Layouts this version reads. Format 1 stored only ``idata_``, the id maps, the scale and
#: ``n_train_`` (not ``map_`` or ``diagnostics_`` of BPMF), and only scalar root attributes.
READABLE_FORMAT_VERSIONS = (1, 2)

_FORMAT = "bpmf-model"
_STATE_GROUP = "bpmf_state"
# Written by this module itself; the rest of the fitted attributes go through _extra_state.
_CORE_ATTRIBUTES = ("idata_", "user_index_", "item_index_", "scale_", "n_train_")
#: Model classes that can be loaded: class name -> {defining module: class}.
_REGISTRY: dict[str, dict[str, type]] = {}


# ---------------------------------------------------------------------- the mixin
class ModelIO:
    """Persistence for estimators whose fitted state is an ArviZ ``DataTree`` plus extras.

    Subclasses are registered under their class name when they are defined, so that
    :func:`load` can find the class recorded in a file.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _REGISTRY.setdefault(cls.__name__, {})[cls.__module__] = cls

    # ------------------------------------------------------------------ saving
    def save(self, path):
        """Write the fitted model to one file (use the extension ``.bpmf``).

        The file holds the posterior (``idata_``), every other fitted attribute, the
        constructor arguments, the model class, the bpmf version and the format version. It
        is written to a temporary file in the same folder and renamed over ``path``, so an
        earlier file at ``path`` stays intact if the save is interrupted.

        Parameters
        ----------
        path : str or path-like
            Where to write the model.

        Returns
        -------
        pathlib.Path
            ``path``.

        Raises
        ------
        NotFittedError
            The model is not fitted.
        DataError
            A constructor argument cannot be saved (a numpy ``Generator`` as
            ``random_state``: use an int seed).
        TypeError
            A fitted attribute holds a value this format cannot store.
        """
        self._check_is_fitted()
        path = Path(path)
        arrays = {}
        state = self._extra_state()
        tree = self.idata_.copy()
        tree.attrs = {
            "bpmf_format": _FORMAT,
            "bpmf_format_version": FORMAT_VERSION,
            "bpmf_version": __version__,
            "bpmf_model": type(self).__name__,
            "bpmf_model_module": type(self).__module__,
            "bpmf_params": json.dumps(_encode_params(self._saved_params())),
            "bpmf_state": json.dumps(_encode(state, arrays, "state")),
            "bpmf_tree_attrs": json.dumps(_encode(dict(self.idata_.attrs), arrays, "attrs")),
            "bpmf_user_ids": json.dumps(_encode(self.user_index_, arrays, "user_ids")),
            "bpmf_item_ids": json.dumps(_encode(self.item_index_, arrays, "item_ids")),
            "bpmf_scale": json.dumps(_encode(self.scale_, arrays, "scale")),
            "bpmf_n_train": int(self.n_train_),
        }
        if arrays:
            tree[_STATE_GROUP] = xr.DataTree(_arrays_dataset(arrays))
        folder = path.parent
        with tempfile.TemporaryDirectory(prefix="bpmf-save-") as workdir:
            store = os.path.join(workdir, "store.zarr")
            tree.to_zarr(store, mode="w", consolidated=False)
            # a new file of a unique name (created with the usual permissions, unlike mkstemp's)
            partial = folder / f".{path.name}.{secrets.token_hex(6)}.part"
            try:
                with open(partial, "xb") as file:
                    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
                        for root, dirs, files in os.walk(store):
                            dirs.sort()
                            for name in sorted(files):
                                full = os.path.join(root, name)
                                archive.write(full, os.path.relpath(full, store))
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(partial, path)
                _sync_folder(folder)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(partial)
                raise
        return path

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`; it predicts exactly what the saved one did.

        Parameters
        ----------
        path : str or path-like
            A file written by ``save``.

        Returns
        -------
        The model, with every fitted attribute restored.

        Raises
        ------
        FileNotFoundError
            ``path`` does not exist.
        ModelFileError
            The file is not a bpmf model file, is damaged, has an unknown or newer format, or
            holds another model class (use :func:`bpmf.load` to load any class).
        """
        path = Path(path)
        info = read_model_info(path)
        if info["model"] != cls.__name__:
            raise ModelFileError(
                f"{str(path)!r} holds a {info['model']} model, not a {cls.__name__}; load it "
                f"with {info['model']}.load(path) or bpmf.load(path)."
            )
        tree = _read_tree(path)
        attrs = dict(tree.attrs)
        arrays = {}
        if _STATE_GROUP in tree.children:
            arrays = {name: var.values for name, var in tree[_STATE_GROUP].ds.data_vars.items()}
            del tree[_STATE_GROUP]
        try:
            model = cls(**json.loads(attrs["bpmf_params"]))
            if info["format_version"] == 1:
                model.user_index_ = _index_from_format1(attrs["bpmf_user_ids"])
                model.item_index_ = _index_from_format1(attrs["bpmf_item_ids"])
                tree_attrs = {k: v for k, v in attrs.items() if not k.startswith("bpmf_")}
            else:
                ids = (_decode(json.loads(attrs[f"bpmf_{side}_ids"]), arrays)
                       for side in ("user", "item"))
                model.user_index_, model.item_index_ = (_as_index(i) for i in ids)
                tree_attrs = _decode(json.loads(attrs["bpmf_tree_attrs"]), arrays)
            scale = _decode(json.loads(attrs["bpmf_scale"]), arrays)
            model.scale_ = None if scale is None else tuple(scale)
            model.n_train_ = int(attrs["bpmf_n_train"])
            state = _decode(json.loads(attrs["bpmf_state"]), arrays)
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFileError(f"{str(path)!r} has damaged metadata ({err}).") from err
        posterior = tree["posterior"].ds if "posterior" in tree.children else xr.Dataset()
        missing = [v for v in ("U", "V", "mu", "sigma") if v not in posterior]
        if missing:
            raise ModelFileError(f"{str(path)!r} lacks posterior variable(s) {missing}.")
        if posterior.sizes.get("user") != len(model.user_index_) or posterior.sizes.get(
            "item"
        ) != len(model.item_index_):
            raise ModelFileError(f"{str(path)!r}: the id maps do not match the posterior shape.")
        model.idata_ = _restore_coords(tree, model.user_index_, model.item_index_)
        model.idata_.attrs = tree_attrs
        model._restore_state(state)
        return model

    # ------------------------------------------------------------------ hooks for subclasses
    def _saved_params(self):
        """The constructor arguments to save (JSON values); the default is ``get_params()``.
        A subclass whose arguments hold other values (e.g. tables) saves them as fitted state
        and puts them back in :meth:`_restore_state`."""
        return self.get_params()

    def _extra_state(self):
        """Fitted state to save beyond ``idata_``, the id maps, ``scale_`` and ``n_train_``.

        Returns a dict (values as listed in the module docstring). The default holds every
        other public attribute whose name ends in ``_``, under its own name.
        """
        return {
            name: value
            for name, value in vars(self).items()
            if name.endswith("_") and not name.startswith("_") and name not in _CORE_ATTRIBUTES
        }

    def _restore_state(self, state):
        """Inverse of :meth:`_extra_state`, called on the loaded model after ``idata_`` is set.

        The default sets each entry as an attribute of the same name.
        """
        for name, value in state.items():
            setattr(self, name, value)


# ---------------------------------------------------------------------- loading any model
def read_model_info(path):
    """What a saved model file is, read from its metadata without loading the model.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    dict
        ``model`` (class name), ``module`` (where the class was defined), ``bpmf_version``
        (the release that wrote the file) and ``format_version``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ModelFileError
        Not a bpmf model file, or one of a format version this bpmf cannot read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {str(path)!r}.")
    attrs = _read_root_attrs(path)
    if attrs.get("bpmf_format") != _FORMAT:
        raise ModelFileError(f"{str(path)!r} is not a bpmf model file (no bpmf format tag).")
    version = attrs.get("bpmf_format_version")
    written_by = attrs.get("bpmf_version", "an unknown version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{str(path)!r} has an unknown model-file format ({version!r}).")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} was written by bpmf {written_by} in model-file format {version}, "
            f"newer than this bpmf {__version__} reads (up to {FORMAT_VERSION}); upgrade bpmf."
        )
    if version not in READABLE_FORMAT_VERSIONS:
        raise ModelFileError(f"{str(path)!r} has an unknown model-file format ({version}).")
    model = attrs.get("bpmf_model")
    if not isinstance(model, str):
        raise ModelFileError(f"{str(path)!r} does not record its model class.")
    return {
        "model": model,
        "module": attrs.get("bpmf_model_module"),
        "bpmf_version": written_by,
        "format_version": version,
    }


def load(path):
    """Load a saved model of any class; the class is read from the file.

    Parameters
    ----------
    path : str or path-like
        A file written by the ``save`` method of a model (``.bpmf``).

    Returns
    -------
    The model, an instance of the class that saved it.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ModelFileError
        The file is not a bpmf model file, is damaged, has an unknown or newer format, or
        holds a class that is not available.

    Examples
    --------
    >>> model = bpmf.load("model.bpmf")  # doctest: +SKIP
    """
    info = read_model_info(path)
    name, module = info["model"], info["module"]
    if module and module not in _REGISTRY.get(name, {}):
        try:  # a model class defined outside bpmf registers itself when its module is imported
            importlib.import_module(module)
        except ImportError:
            pass
    candidates = _REGISTRY.get(name, {})
    if module in candidates:
        cls = candidates[module]
    else:  # the class moved to another module since the file was written
        ours = [c for m, c in candidates.items() if m == "bpmf" or m.startswith("bpmf.")]
        found = ours or list(candidates.values())
        if len(found) != 1:
            raise ModelFileError(
                f"{str(path)!r} holds a {name} model (from module {module}), and "
                + ("no such model class is available; import the module that defines it first."
                   if not found else f"{len(found)} classes of that name are defined.")
            )
        cls = found[0]
    return cls.load(path)


# ---------------------------------------------------------------------- values <-> JSON
def _encode(value, arrays, key):
    """JSON-able form of ``value``; numeric arrays go to ``arrays`` and are referenced."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return _float_json(value) if isinstance(value, float) else value
    if isinstance(value, np.generic):
        return {"__numpy__": value.dtype.str, "value": _encode(value.item(), arrays, key)}
    if isinstance(value, pd.Index):
        return {"__index__": str(value.dtype), "name": value.name,
                "values": _encode(np.asarray(value), arrays, key)}
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biufc":
            name = f"a{len(arrays)}"
            arrays[name] = value
            return {"__ndarray__": name}
        if value.dtype.kind in "OUS":
            return {"__strings__": value.dtype.str, "shape": list(value.shape),
                    "values": [_encode(v, arrays, key) for v in value.ravel().tolist()]}
        raise TypeError(f"Cannot save {key!r}: arrays of dtype {value.dtype} are not supported.")
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, arrays, key) for v in value]}
    if isinstance(value, list):
        return [_encode(v, arrays, key) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"Cannot save {key!r}: dict keys must be strings.")
        if any(k.startswith("__") for k in value):
            raise TypeError(f"Cannot save {key!r}: dict keys may not start with '__'.")
        return {k: _encode(v, arrays, f"{key}.{k}") for k, v in value.items()}
    raise TypeError(
        f"Cannot save fitted attribute {key!r} of type {type(value).__name__}; override "
        "_extra_state/_restore_state to store it in another form."
    )


def _decode(value, arrays):
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if "__ndarray__" in value:
        return np.asarray(arrays[value["__ndarray__"]])
    if "__numpy__" in value:
        return np.dtype(value["__numpy__"]).type(_decode(value["value"], arrays))
    if "__float__" in value:
        return float(value["__float__"])
    if "__tuple__" in value:
        return tuple(_decode(v, arrays) for v in value["__tuple__"])
    if "__strings__" in value:
        values = [_decode(v, arrays) for v in value["values"]]
        dtype = np.dtype(value["__strings__"])
        out = np.empty(len(values), dtype=dtype)
        out[:] = values
        return out.reshape(value["shape"])
    if "__index__" in value:
        values = _decode(value["values"], arrays)
        dtype = object if value["__index__"] == "object" else value["__index__"]
        return pd.Index(values, dtype=dtype, name=value["name"])
    return {k: _decode(v, arrays) for k, v in value.items()}


def _float_json(value):
    """Floats JSON cannot write exactly (nan, inf) travel as strings."""
    return value if np.isfinite(value) else {"__float__": repr(value)}


def _encode_params(params):
    """Constructor arguments as plain JSON (they are read back by ``cls(**params)``)."""

    def plain(value):
        if isinstance(value, pd.DataFrame) and {"user", "item"} <= set(value.columns):
            # pairs (model_config["implicit_pairs"]): their ids only
            return {"user": plain(value["user"].tolist()), "item": plain(value["item"].tolist())}
        if hasattr(value, "user_codes") and hasattr(value, "to_frame"):  # a Ratings: its pairs
            return plain(value.to_frame())
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.random.Generator):
            raise DataError(
                "Cannot save a model whose random_state is a numpy Generator; use an int seed."
            )
        return value

    return plain(params)


def _sync_folder(folder):
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _index_from_format1(text):
    spec = json.loads(text)
    dtype = object if spec["dtype"] == "object" else spec["dtype"]
    return pd.Index(spec["values"], dtype=dtype)


def _as_index(value):
    return value if isinstance(value, pd.Index) else pd.Index(value)


def _arrays_dataset(arrays):
    return xr.Dataset(
        {name: ([f"{name}_{axis}" for axis in range(a.ndim)], a) for name, a in arrays.items()}
    )


# ---------------------------------------------------------------------- reading the store
def _read_root_attrs(path):
    try:
        if not zipfile.is_zipfile(path):
            raise ModelFileError(
                f"{str(path)!r} is not a bpmf model file (not a zip archive); it may be "
                "truncated or of another format."
            )
        with zipfile.ZipFile(path) as archive:
            root = json.loads(archive.read("zarr.json"))
    except ModelFileError:
        raise
    except Exception as err:  # zip/json errors all mean an unreadable file
        raise ModelFileError(f"{str(path)!r} could not be read as a bpmf model ({err}).") from err
    attrs = root.get("attributes", {}) if isinstance(root, dict) else {}
    return attrs if isinstance(attrs, dict) else {}


def _read_tree(path):
    try:
        with tempfile.TemporaryDirectory(prefix="bpmf-load-") as workdir:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
                if bad is not None:
                    raise ModelFileError(f"{str(path)!r} is corrupted (bad member {bad!r}).")
                for member in archive.namelist():
                    if member.startswith("/") or ".." in Path(member).parts:
                        raise ModelFileError(f"{str(path)!r} has an unsafe member {member!r}.")
                archive.extractall(workdir)
            tree = xr.open_datatree(workdir, engine="zarr", consolidated=False)
            return tree.load()
    except ModelFileError:
        raise
    except Exception as err:  # zarr/json/zip errors all mean an unreadable file
        raise ModelFileError(f"{str(path)!r} could not be read as a bpmf model ({err}).") from err


def coord_values(index):
    """An id index as coordinate values (object ids become strings, as zarr stores them)."""
    values = np.asarray(index)
    return values.astype(str) if values.dtype == object else values


def ids_like(values, index):
    """The ids of ``index`` whose coordinate form (see :func:`coord_values`) is ``values``."""
    positions = pd.Index(coord_values(index)).get_indexer(np.asarray(values))
    return index[positions].to_numpy()


def _restore_coords(tree, user_index, item_index):
    """Give the ``user``/``item`` coords back their original dtype after a round trip."""
    users = coord_values(user_index)
    items = coord_values(item_index)
    groups = {}
    for node in tree.subtree:
        if node is tree:
            continue
        ds = node.to_dataset()
        if "user" in ds.coords:
            ds = ds.assign_coords(user=users)
        if "item" in ds.coords:
            ds = ds.assign_coords(item=items)
        for name, index in (("obs_user", user_index), ("obs_item", item_index)):
            if name in ds.coords:
                codes = index.get_indexer(ids_like(ds[name].values, index))
                ds = ds.assign_coords({name: ("obs", coord_values(index)[codes])})
        groups[node.path] = ds
    return xr.DataTree.from_dict(groups)

