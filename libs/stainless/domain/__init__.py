"""The vocabulary of the platform: cell and mask classes, review states, the differential.

Pure: no I/O, no framework, nothing from another layer. Every other package takes these
names from here.
"""
