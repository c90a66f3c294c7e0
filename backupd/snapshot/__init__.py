"""Consistent snapshots: lock commits, freeze filesystems, start the snapshot set, thaw, record.

Imports follow the data flow: schedule -> coordinator -> (dblock, freezer, providers) ->
catalog; retention and the command line only read the catalog.
"""
