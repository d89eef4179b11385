"""Offline tools around ROS 2 bags, without ROS: read camera frames from a bag, run the
node's perception pipeline on every frame, write the affect messages to a new bag, score
them against annotations and plot timelines (``abaw-affect bag-eval``), and turn videos
into bags (``abaw-affect video-to-bag``).

Modules: ``images`` (message <-> BGR arrays, shared with the node), ``bag_io`` (rosbags
I/O and message types), ``annotations`` (labels by frame index or stamp), ``track`` (one
face's predictions over time), ``report`` (metrics, JSON), ``plots`` (timeline PNG),
``bag_eval``, ``video_to_bag``. None of them imports ROS.
"""
