"""Offline tools around ROS 2 bags, without ROS: read camera frames from a bag, run the
node's perception pipeline on every frame, write the affect messages to a new bag, score
them against annotations and plot timelines (``abaw-affect bag-eval``), and turn videos
into bags (``abaw-affect video-to-bag``).

Modules: ``bag_types`` (our messages in the rosbags type store), ``bag_reader`` /
``bag_damage`` / ``bag_writers`` (reading, reading past damage, writing bags), ``sources``
(frames from a bag, a video or an image folder), ``frame_loop`` (source -> pipeline ->
sinks, the skip accounting), ``annotations`` (labels by frame index or stamp), ``track``
(one face's predictions over time), ``report`` (metrics, JSON), ``plots`` (timeline PNG),
``bag_eval``, ``batch``, ``predict``, ``video_to_bag``. None of them imports ROS.
"""
