"""The module ``feast apply`` loads: the Feast objects generated from the Dagster assets' metadata.

Nothing is declared here. ``feast -c feature_repo apply`` imports this module and collects the
Feast objects among its attributes, so the generated ones are published as module attributes
(``entity_user``, ``view_user_features``, ``service_ctr_model_v1``, ...). The ``feast_registry``
asset applies the very same objects; see :mod:`taobao_assets.feast_repo`.

Write ``feature_store.yaml`` first: ``python -m taobao_assets.feast_repo write-config``.
"""

from taobao_assets.assets.serving import generated_repo

globals().update(generated_repo().module_attributes())
