"""ExportedObliqueEncoder: a whole oblique model, exported to ONNX / OpenVINO graphs, as a Sentence Transformers module."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.modules import InputModule
from sentence_transformers.util import load_dir_path

from st_oblique.data.images import batch_modality
from st_oblique.errors import ObliqueLoadError
from st_oblique.modules.exported_inputs import PREPROCESSING_FOLDERS, ExportedImageInputs, ExportedTextInputs
from st_oblique.modules.graph_runtimes import BACKENDS, GraphInfo, ONNXRuntimeGraph, OpenVINOGraph, read_graph_info
from st_oblique.modules.pooling import ObliquePooling
from st_oblique.modules.serialization import describe_location, hub_kwargs, load_module_config, with_version

__all__ = ["FORMAT_NAMES", "RUNTIME_OPTIONS", "ExportedObliqueEncoder"]

logger = logging.getLogger(__name__)

FORMAT_NAMES = {"onnx": "ONNX", "openvino": "OpenVINO"}
RUNTIME_OPTIONS: dict[str, tuple[str, ...]] = {
    "onnx": ("file_name", "provider", "provider_options", "session_options"),
    "openvino": ("file_name", "ov_config"),
}
"""The ``model_kwargs`` each backend takes (Sentence Transformers' names for its own ONNX / OpenVINO backends)."""


class ExportedObliqueEncoder(InputModule):
    """A whole oblique model as ONNX or OpenVINO graphs: one graph per modality, from the tokenizer's / image
    processor's tensors to the ``(B, K, d)`` oblique embeddings (class tokens, towers and oblique head inside).

    Written by :func:`st_oblique.export` (``st-oblique export``); loaded by Sentence Transformers' loaders with the
    usual ``backend`` argument::

        import st_oblique
        from sentence_transformers import SentenceTransformer

        model = st_oblique.load("oblique-minilm-onnx", backend="onnx")                  # or "openvino"
        model = SentenceTransformer("oblique-minilm-onnx", backend="onnx", trust_remote_code=True)
        model = st_oblique.load("oblique-minilm-onnx", backend="onnx",
                                model_kwargs={"file_name": "onnx/model_text_qint8.onnx"})  # pick a variant
        embeddings = model.encode(["A man plays a guitar."])                              # (1, K*d)

    Why st-oblique exports itself: Sentence Transformers' ``backend="onnx"``/``"openvino"`` converts only its
    ``Transformer`` module (through optimum, which refuses architectures it does not know), and keeps every other
    module in torch. An oblique model's K class tokens enter the towers through st-oblique's modules and hooks,
    and its head (:class:`~st_oblique.ObliquePooling`) is a module of its own, so that route would leave the
    towers without their class tokens and torch on the hot path. :mod:`st_oblique.export` traces the real torch
    forward pass of the whole model per modality instead, and this module runs the graphs.

    Inputs: texts (``input_ids``, ``attention_mask`` and ``token_type_ids`` where the graph was traced with them,
    built by the saved tokenizer with the torch model's class-token layout) and images (``pixel_values`` ``(B, 3, H, W)``
    from the saved image processor), see :mod:`st_oblique.modules.exported_inputs`. Outputs:
    ``oblique_embeddings`` ``(B, K, d)`` and ``sentence_embedding`` ``(B, K*d)``.

    Relations: the configuration of the :class:`~st_oblique.ObliquePooling` the graphs were exported from is kept
    (:attr:`exported_pooling`, its heads on the meta device: never run), so K, d, the token sources, the recorded logit
    scale, ``truncate_dim`` as whole tokens, ``similarity_fn_name="dot"``, :func:`st_oblique.describe_model` and
    the model card work as for the torch model. The graphs are checked against that configuration on loading:
    their output shape ``(batch, K, d)``, modality, token source and opset must match, or the folder is refused.

    Variants: ``fp32`` and, when exported with ``quantize="int8"``, ``qint8`` (ONNX Runtime dynamic int8, or
    OpenVINO static int8 calibrated by NNCF). The variant exported last is the default; ``model_kwargs={"file_name":
    ...}`` names a graph file (of any modality) of the variant to use.

    Args:
        folder: the local model folder holding the graphs and preprocessing files.
        num_tokens: K.
        token_dim: d.
        opset: the ONNX opset the graphs were exported with.
        modalities: ``{modality: {"preprocessing": spec, "token_source": ..., "class_token_placement": ...,
            "backbone": ...}}``.
        graphs: ``{backend: {variant: {modality: relative path}}}``.
        default_variant: the variant used unless ``file_name`` says otherwise.
        pooling: the configuration of the ObliquePooling the graphs contain.
        verification: what the export measured against the torch model, per ``backend/variant``.
        backend: ``"onnx"`` or ``"openvino"`` (``"torch"``, Sentence Transformers' default, picks the first format
            the folder holds: an exported folder has no torch weights).
        model_kwargs: the backend's options (:data:`RUNTIME_OPTIONS`): ``file_name``; ONNX Runtime's ``provider``
            (default ``"CPUExecutionProvider"``), ``provider_options``, ``session_options``; OpenVINO's
            ``ov_config`` (``INFERENCE_PRECISION_HINT`` defaults to ``"f32"``).
    """

    config_file_name = "oblique_export_config.json"
    config_keys: list[str] = [
        "num_tokens",
        "token_dim",
        "opset",
        "modalities",
        "graphs",
        "default_variant",
        "pooling",
        "verification",
    ]
    save_in_root = True

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        num_tokens: int,
        token_dim: int,
        opset: int,
        modalities: dict[str, dict[str, Any]],
        graphs: dict[str, dict[str, dict[str, str]]],
        default_variant: str,
        pooling: dict[str, Any],
        verification: dict[str, Any] | None = None,
        backend: str = "onnx",
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.num_tokens = int(num_tokens)
        self.token_dim = int(token_dim)
        self.opset = int(opset)
        self.modalities_config = {name: dict(settings) for name, settings in modalities.items()}
        self.graphs = graphs
        self.default_variant = default_variant
        self.pooling = dict(pooling)
        self.verification = verification or {}
        self.backend, options = self._resolve_backend(backend, dict(model_kwargs or {}))
        self.variant = self._resolve_variant(options.pop("file_name", None))
        self.runtime_options = options
        self.graph_infos = {modality: self._checked_graph(modality) for modality in self.modalities_config}
        self._runners: dict[str, ONNXRuntimeGraph | OpenVINOGraph] = {}
        self._inputs: dict[str, ExportedTextInputs | ExportedImageInputs] = {}
        # Built on first use and kept out of the module tree: a description of the head, never run or moved.
        self.__dict__["_exported_pooling"] = None

    # -- description ----------------------------------------------------------------------------------------------

    @property
    def modalities(self) -> list[str]:
        return list(self.modalities_config)

    @property
    def exported_pooling(self) -> ObliquePooling:
        """The :class:`~st_oblique.ObliquePooling` the graphs were exported from: its configuration (K, d, token
        sources) and its temperature (the recorded logit scale and bias); its heads' weights are on the meta device
        (the graphs hold the real ones)."""
        if self.__dict__["_exported_pooling"] is None:
            config = {key: value for key, value in self.pooling.items() if key in ObliquePooling.config_keys}
            pooling = ObliquePooling(**config)
            pooling.heads.to("meta")  # never run: the graphs hold the trained heads; the settings are what is read
            self.__dict__["_exported_pooling"] = pooling
        return self.__dict__["_exported_pooling"]

    @property
    def class_token_placement(self) -> dict[str, str]:
        """Where the class tokens sit, per modality, as recorded from the torch model."""
        return {name: settings.get("class_token_placement", "") for name, settings in self.modalities_config.items()}

    @property
    def model_name(self) -> str:
        """The towers the graphs were exported from, the format and the variant (shown by ``describe_model``)."""
        backbones = dict.fromkeys(settings.get("backbone", "?") for settings in self.modalities_config.values())
        return f"{' + '.join(backbones)} as {FORMAT_NAMES[self.backend]} graphs, {self.variant}"

    def get_embedding_dimension(self) -> int:
        """K * d."""
        return self.num_tokens * self.token_dim

    @property
    def tokenizer(self) -> Any:
        """The text tokenizer (a Hugging Face tokenizer or open_clip's), or None for an image-only model."""
        return self._modality_inputs("text").tokenizer if "text" in self.modalities_config else None

    @property
    def max_seq_length(self) -> int | None:
        """Longest text in tokens (class positions come on top, as in the torch model); settable."""
        return self._modality_inputs("text").max_length if "text" in self.modalities_config else None

    @max_seq_length.setter
    def max_seq_length(self, value: int | None) -> None:
        if value is not None and "text" in self.modalities_config:
            self._modality_inputs("text").max_length = int(value)

    def get_config_dict(self) -> dict[str, Any]:
        config = {
            "num_tokens": self.num_tokens,
            "token_dim": self.token_dim,
            "opset": self.opset,
            "modalities": self.modalities_config,
            "graphs": self.graphs,
            "default_variant": self.default_variant,
            "pooling": self.pooling,
            "verification": self.verification,
        }
        return with_version(config)

    def __repr__(self) -> str:
        return (
            f"ExportedObliqueEncoder({{'backend': {self.backend!r}, 'variant': {self.variant!r}, 'num_tokens': "
            f"{self.num_tokens}, 'token_dim': {self.token_dim}, 'modalities': {self.modalities}}})"
        )

    # -- inputs and forward ---------------------------------------------------------------------------------------

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, Any]:
        """Texts -> ``input_ids``/``attention_mask`` (``token_type_ids``) ``(B, L)``; images -> ``pixel_values``
        ``(B, 3, H, W)``; with ``"modality"``. The prompt goes in front of texts; ``max_length`` caps their length."""
        if not inputs:
            return {}
        modality = batch_modality(type(self).__name__, inputs, self.modalities)
        if modality == "text":
            return self._modality_inputs("text")(list(inputs), prompt=prompt, max_length=kwargs.get("max_length"))
        return self._modality_inputs(modality)(list(inputs))

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Adds ``oblique_embeddings`` ``(B, K, d)`` and ``sentence_embedding`` ``(B, K*d)`` from the modality's graph."""
        modality = features.get("modality", "text")
        if modality not in self.modalities_config:
            raise ValueError(f"This exported model embeds {self.modalities}, not {modality!r} inputs.")
        runner = self._runner(modality)
        info = runner.info
        missing = [name for name in info.input_names if not isinstance(features.get(name), torch.Tensor)]
        if missing:
            raise ValueError(
                f"The exported {modality} graph takes {info.input_names}, but the features lack {missing} (they have "
                f"{sorted(key for key in features if isinstance(features[key], torch.Tensor))}). Make them with this "
                "model's preprocess() (encode() does), which builds exactly the graph's inputs."
            )
        feeds = {
            name: features[name].detach().cpu().numpy().astype(info.input_dtypes[name], copy=False)
            for name in info.input_names
        }
        tokens = torch.from_numpy(runner.run(feeds))
        device = next((value.device for value in features.values() if isinstance(value, torch.Tensor)), None)
        if device is not None and device.type != "cpu":
            tokens = tokens.to(device)
        features["oblique_embeddings"] = tokens
        features["sentence_embedding"] = tokens.reshape(tokens.shape[0], -1)
        return features

    def _modality_inputs(self, modality: str) -> ExportedTextInputs | ExportedImageInputs:
        if modality not in self._inputs:
            spec = self.modalities_config[modality]["preprocessing"]
            if modality == "text":
                # the tokenizer makes the inputs the graph was traced with, whatever class transformers rebuilds it as
                inputs = ExportedTextInputs(self.folder, spec, input_names=self.graph_infos["text"].input_names)
            else:
                inputs = ExportedImageInputs(self.folder, spec)
            self._inputs[modality] = inputs
        return self._inputs[modality]

    def _runner(self, modality: str) -> ONNXRuntimeGraph | OpenVINOGraph:
        """The engine session of ``modality``'s graph, created on first use (a text-only workload never loads the
        image graph)."""
        if modality not in self._runners:
            info = self.graph_infos[modality]
            if self.backend == "onnx":
                self._runners[modality] = ONNXRuntimeGraph(info, **self.runtime_options)
            else:
                self._runners[modality] = OpenVINOGraph(info, **self.runtime_options)
        return self._runners[modality]

    # -- backend, variant, graph checks ---------------------------------------------------------------------------

    def _resolve_backend(self, backend: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        available = [name for name in BACKENDS if self.graphs.get(name)]
        if backend == "torch":
            if not available:
                raise ObliqueLoadError(f"The exported model in {self.folder} lists no graphs; export it again.")
            # Sentence Transformers' default backend; an exported folder has no torch weights to run.
            logger.info(f"{self.folder} holds exported graphs only; running them with backend={available[0]!r}.")
            backend = available[0]
        if backend not in BACKENDS:
            raise ValueError(f"Unknown backend {backend!r}; exported oblique models run with {BACKENDS}.")
        if backend not in available:
            raise ObliqueLoadError(
                f"The exported model in {self.folder} has no {FORMAT_NAMES[backend]} graphs (it has: "
                f"{', '.join(available) or 'none'}). Load it with backend={available[0]!r}, or export it with "
                f"format={backend!r} (st-oblique export MODEL --format {backend})."
                if available
                else f"The exported model in {self.folder} lists no graphs; export it again."
            )
        unknown = sorted(set(options) - set(RUNTIME_OPTIONS[backend]))
        if unknown:
            raise ValueError(
                f"model_kwargs {unknown} are not options of the {FORMAT_NAMES[backend]} backend of an exported oblique "
                f"model; it takes {list(RUNTIME_OPTIONS[backend])}."
            )
        return backend, options

    def _resolve_variant(self, file_name: str | None) -> str:
        variants = self.graphs[self.backend]
        if file_name is None:
            return self.default_variant if self.default_variant in variants else next(iter(variants))
        wanted = Path(str(file_name)).as_posix()
        for variant, files in variants.items():
            for path in files.values():
                if wanted in (path, Path(path).name, Path(path).relative_to(Path(path).parts[0]).as_posix()):
                    return variant
        listed = sorted(path for files in variants.values() for path in files.values())
        other = [
            path for name, formats in self.graphs.items() if name != self.backend
            for files in formats.values() for path in files.values()
        ]
        hint = f" ({wanted} belongs to another backend: load with that backend)" if wanted in other else ""
        raise ObliqueLoadError(
            f"file_name={file_name!r} is not one of the {FORMAT_NAMES[self.backend]} graphs of the exported model in "
            f"{self.folder}{hint}: {listed}."
        )

    def _checked_graph(self, modality: str) -> GraphInfo:
        """The graph of ``modality`` in the chosen variant, after checking it against this config."""
        files = self.graphs[self.backend][self.variant]
        if modality not in files:
            raise ObliqueLoadError(
                f"The exported model in {self.folder} has no {modality} graph in its {self.backend} {self.variant} "
                f"variant (it lists {sorted(files)}); export the model again."
            )
        info = read_graph_info(self.backend, self.folder / files[modality])
        expected = {
            "modality": modality,
            "num_tokens": str(self.num_tokens),
            "token_dim": str(self.token_dim),
            "token_source": str(self.modalities_config[modality].get("token_source")),
            "opset": str(self.opset),
        }
        problems = []
        if info.output_shape[1:] != [self.num_tokens, self.token_dim]:
            shape = ["batch" if dim is None else dim for dim in info.output_shape]
            problems.append(f"its output has shape {shape}, the config says (batch, {self.num_tokens}, {self.token_dim})")
        found_opset = str(info.opset) if info.opset is not None else info.metadata.get("opset")
        actual = {**info.metadata, "opset": found_opset}
        for key, value in expected.items():
            if actual.get(key) != value:
                problems.append(f"its {key} is {actual.get(key)!r}, the config says {value!r}")
        if problems:
            location = describe_location(str(self.folder), "", self.config_file_name)
            raise ObliqueLoadError(
                f"The exported graph {info.path} does not match {location}: {'; '.join(problems)}. The graph and the "
                "config come from different exports, or one was edited; export the model again."
            )
        return info

    def __getstate__(self) -> dict[str, Any]:
        # Engine sessions cannot be pickled (Sentence Transformers' multi-process pool pickles the model); they and the
        # preprocessing are rebuilt on first use in the other process.
        state = dict(super().__getstate__())
        state["_runners"], state["_inputs"], state["_exported_pooling"] = {}, {}, None
        return state

    # -- saving and loading ---------------------------------------------------------------------------------------

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """Write the config and copy the graphs and preprocessing files to ``output_path`` (a model folder)."""
        output = Path(output_path)
        output.mkdir(parents=True, exist_ok=True)
        self.save_config(str(output))
        if output.resolve() == self.folder.resolve():
            return
        for relative in self._files():
            source, target = self.folder / relative, output / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            elif source.is_file():
                shutil.copy2(source, target)

    def _files(self) -> list[str]:
        """Every file and folder of the export besides the config, relative to the model folder."""
        files = [folder for modality, folder in PREPROCESSING_FOLDERS.items() if modality in self.modalities_config]
        for variants in self.graphs.values():
            for graphs in variants.values():
                for path in graphs.values():
                    files += [path, *_companions(path)]
        return files

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        backend: str = "torch",
        model_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> ExportedObliqueEncoder:
        """Load from a model folder or Hub repo, with Sentence Transformers' ``backend`` and ``model_kwargs``.

        Raises:
            ObliqueLoadError: a missing or damaged config, graphs that do not match it, a backend or ``file_name``
                the folder does not have.
            MissingExtraError: the backend's engine is not installed (the message gives the pip line).
        """
        hub = hub_kwargs(dict(token=token, cache_folder=cache_folder, revision=revision,
                              local_files_only=local_files_only))
        config = load_module_config(
            cls, model_name_or_path, config_keys=cls.config_keys, required_keys=cls.config_keys[:-1],
            filename=cls.config_file_name, subfolder=subfolder, **hub,
        )
        folder = load_dir_path(model_name_or_path, subfolder=subfolder, **hub)
        if folder is None:
            raise ObliqueLoadError(f"Cannot find the exported model {model_name_or_path}.")
        try:
            return cls(folder, **config, backend=backend, model_kwargs=model_kwargs)
        except TypeError as error:
            location = describe_location(model_name_or_path, subfolder, cls.config_file_name)
            raise ObliqueLoadError(f"Cannot load {cls.__name__}: {location} holds an invalid config: {error}") from error


def _companions(path: str) -> list[str]:
    """The files that go with a graph file: an ONNX graph's external weights, an OpenVINO graph's ``.bin``."""
    if path.endswith(".xml"):
        return [path[: -len(".xml")] + ".bin"]
    return [path + ".data"]

