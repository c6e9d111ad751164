"""The output folders of ``st-oblique`` commands: written completely or not at all, by one run at a time.

The implementation is the library's :mod:`st_oblique.output_folder` (the evaluation harness writes its records
the same way); this module keeps the application's import path.
"""

from __future__ import annotations

from st_oblique.output_folder import check_writable, lock_output_dir, staged_output_dir

__all__ = ["check_writable", "lock_output_dir", "staged_output_dir"]
