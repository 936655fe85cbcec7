"""The node graph's default wiring, written once: the modalities and the ROS topic and type of each stream.

The parameter schemas (core/runtime/params.py), the bag topic map (core/bags/reader.py TopicMap)
and the simulated bag (core/sim/simulate.py) read these; a deployment remaps them in
config/perception.yaml or with the launch file's ``<modality>_topic`` arguments.
"""

MODALITIES = ('camera', 'lidar', 'audio')  # canonical order everywhere (arrays, masks, ModalityHealth)

# modality -> (default topic, default message type)
SENSOR_TOPICS = {
    'camera': ('/camera/image_raw', 'sensor_msgs/msg/Image'),
    'lidar': ('/lidar/points', 'sensor_msgs/msg/PointCloud2'),
    'audio': ('/audio/frames', 'sentryfuse_ros/msg/AudioFrame'),
}
BATTERY_TOPIC = '/battery_state'              # sensor_msgs/BatteryState
LABEL_TOPIC = '/sentryfuse/ground_truth'      # std_msgs/String, the class name of the scene
HEALTH_TOPIC = '/sentryfuse/health'           # sentryfuse_ros/ModalityHealth
