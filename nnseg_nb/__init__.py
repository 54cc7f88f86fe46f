"""nnseg_nb: nnU-Net v2, faithful and readable, for notebooks.

The library is one module per stage of nnU-Net's pipeline, in the order data flows through them::

    paths -> io -> dataset -> verify / convert -> fingerprint -> planning -> plans
          -> preprocessing -> preprocessed -> loader -> augment -> network -> loss / splits
          -> training -> inference / predict -> export -> evaluation -> crossval
          -> postprocessing / ensemble -> model_selection

Stages and the module of each:

- ``paths``: the raw, preprocessed and results roots; finding a dataset by name or id;
- ``io``: reading and writing images and segmentations (nnU-Net's reader/writers);
- ``dataset``: ``dataset.json`` and the cases of a raw dataset; ``verify`` checks one, ``convert``
  turns other layouts (MSD, ...) into one; ``demo_data`` builds the small demo datasets (``demo_cases`` draws their cases);
- ``fingerprint``: spacings, shapes and foreground intensities of the training cases;
- ``planning``: nnU-Net's experiment planner (patch, network topology, batch size per configuration)
  and ``plan_dataset``, planning a dataset on disk; ``plans``: the plans file as dataclasses;
- ``preprocessing`` (+ ``resampling``): crop, normalize, resample every case;
  ``preprocessed``: a preprocessed case on disk, ours or nnU-Net's;
- ``loader``: patches with foreground oversampling; ``augment`` (a package): nnU-Net's training
  augmentation, batched in torch;
- ``network``: what planning needs of the U-Nets (feature-map sizes, deep supervision) and
  ``build_network``; ``unet``: the U-Net modules, with nnU-Net's parameter names;
- ``loss``, ``splits``: Dice + CE with deep supervision; the five-fold cross-validation splits;
- ``training``: the training loop (nnUNetTrainer); ``checkpoint``: its checkpoints and per-epoch log;
  ``devices``: device, autocast precision and the DDP batch split;
- ``inference``: sliding-window prediction with mirroring; ``predict``: files, folders, arrays and a
  fold's validation through a model folder (ours or nnU-Net's); ``model_folders``: opening and
  installing nnU-Net's trained model folders; ``postprocessing``: keeping the largest
  component where it helps; ``ensemble``: averaging folds or configurations;
- ``evaluation``: Dice and friends per case and class; ``export``: predictions back to the raw geometry;
- ``crossval``: the folds of configurations, resumably, merged into nnU-Net's CV results;
  ``cascade``: a lowres stage's predictions as the next stage's input; ``model_selection``: the best
  configuration or ensemble and its inference instructions;
- around them: ``cli`` (the ``nnseg-nb`` command), ``notebook`` and ``runner`` (running the guided
  notebooks), ``viz`` (figures), ``parallel`` and ``utils`` (worker processes, atomic writes).

Every stage reads and writes nnU-Net's own file formats, so the two tools can be mixed.
"""

__version__ = "0.1.0"
