"""Adapters for trainers people already use; each imports its framework, the core never does.

- :mod:`proveseg.integrations.mmengine`: ``custom_imports=dict(imports=['proveseg.integrations.mmengine'])``
- :mod:`proveseg.integrations.lightning`: ``ProvesegDataModule`` and ``ProvesegCallback``
"""
