"""The fault campaign (issue 7): bad inputs, kills, full disks and security basics.

A package on purpose: without it this folder's conftest.py would be imported as the
top-level module ``conftest`` and shadow ``tests/conftest.py``, whose helpers other test
modules import by that name.
"""
