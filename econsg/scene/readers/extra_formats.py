"""Registry of the real-dataset readers (picked up by econsg.scene.readers.available_readers).

Order is detection order, most specific layout first: a 3D-OVS folder also holds a COLMAP model, so
ovs3d must be tried before colmap. (LERF-OVS labels are not a scene layout: see readers.lerf.)
"""

from econsg.scene.readers import colmap, ovs3d, replica_nice, replica_semantic, scannet

READERS = [ovs3d, scannet, replica_semantic, replica_nice, colmap]
