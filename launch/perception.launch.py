"""Bring up SentryFuse: health_monitor + perception (+ sensor_sim with use_sim:=true).

    ros2 launch sentryfuse_ros perception.launch.py use_sim:=true
    ros2 launch sentryfuse_ros perception.launch.py camera_topic:=/front/image_raw device:=cuda
    ros2 launch sentryfuse_ros perception.launch.py device:=cuda backend:=onnxruntime onnx_dir:=/path/export

perception is a lifecycle node (launch_ros LifecycleNode): with autostart:=true (default) it
configures and activates itself as it starts, as under `ros2 run` and `sentryfuse run`;
autostart:=false leaves it unconfigured for `ros2 lifecycle set /perception configure|activate`
or a lifecycle manager (launch's OnStateTransition / ChangeState events work on it either way).

Each node reads its own section (by node name) of `params_file`. Topic arguments remap the
default topic names of every node. Plain launch_ros, works on Humble and newer. Where
`ros2 launch` is missing, `sentryfuse run [--use-sim]` starts the same graph from the same YAML.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = 'sentryfuse_ros'
DEFAULT_TOPICS = {
    'camera_topic': '/camera/image_raw',
    'lidar_topic': '/lidar/points',
    'audio_topic': '/audio/frames',
}


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    arg = LaunchConfiguration
    arguments = [
        DeclareLaunchArgument('use_sim', default_value='false',
                              description='also start sensor_sim, the simulated robot'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='use /clock (bag replay, simulators)'),
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config', 'perception.yaml'),
                              description='ros__parameters YAML, one section per node name'),
        DeclareLaunchArgument('camera_topic', default_value=DEFAULT_TOPICS['camera_topic']),
        DeclareLaunchArgument('lidar_topic', default_value=DEFAULT_TOPICS['lidar_topic']),
        DeclareLaunchArgument('audio_topic', default_value=DEFAULT_TOPICS['audio_topic']),
        DeclareLaunchArgument('model_path', default_value='',
                              description="perception checkpoint ('' = the shipped model)"),
        DeclareLaunchArgument('device', default_value='cpu', description='cpu or cuda'),
        DeclareLaunchArgument('precision', default_value='fp32', description='fp32, bf16 or fp16 (CUDA)'),
        DeclareLaunchArgument('backend', default_value='torch', description='torch or onnxruntime'),
        DeclareLaunchArgument('onnx_dir', default_value='',
                              description='folder of `sentryfuse export` (backend:=onnxruntime)'),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='perception configures and activates itself; false: it waits '
                                          'for `ros2 lifecycle set /perception configure`'),
        DeclareLaunchArgument('compute_budget_override', default_value='0.0',
                              description='0 = budget from the battery; else a budget in (0, 1]'),
    ]
    remappings = [(DEFAULT_TOPICS[name], arg(name)) for name in DEFAULT_TOPICS]
    use_sim_time = {'use_sim_time': ParameterValue(arg('use_sim_time'), value_type=bool)}
    budget = {'compute_budget_override': ParameterValue(arg('compute_budget_override'),
                                                        value_type=float)}
    nodes = [
        Node(package=PACKAGE, executable='health_monitor', name='health_monitor',
             output='screen', remappings=remappings,
             parameters=[arg('params_file'), use_sim_time, budget]),
        LifecycleNode(package=PACKAGE, executable='perception', name='perception', namespace='',
                      output='screen', remappings=remappings,
                      parameters=[arg('params_file'), use_sim_time, {
                          'model_path': ParameterValue(arg('model_path'), value_type=str),
                          'device': ParameterValue(arg('device'), value_type=str),
                          'precision': ParameterValue(arg('precision'), value_type=str),
                          'backend': ParameterValue(arg('backend'), value_type=str),
                          'onnx_dir': ParameterValue(arg('onnx_dir'), value_type=str),
                          'autostart': ParameterValue(arg('autostart'), value_type=bool),
                      }]),
        Node(package=PACKAGE, executable='sensor_sim', name='sensor_sim',
             output='screen', remappings=remappings,
             parameters=[arg('params_file'), use_sim_time],
             condition=IfCondition(arg('use_sim'))),
    ]
    return LaunchDescription(arguments + nodes)
