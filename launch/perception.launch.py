"""Bring up SentryFuse: health_monitor + perception (+ sensor_sim with use_sim:=true).

    ros2 launch sentryfuse_ros perception.launch.py use_sim:=true
    ros2 launch sentryfuse_ros perception.launch.py camera_topic:=/front/image_raw device:=cuda
    ros2 launch sentryfuse_ros perception.launch.py device:=cuda backend:=onnxruntime onnx_dir:=/path/export

perception is a lifecycle node: with autostart:=true (default) it configures and activates itself
as it starts, as under `ros2 run` and `sentryfuse run`; autostart:=false leaves it unconfigured for
`ros2 lifecycle set /perception configure|activate` or a lifecycle manager. It is started as a plain
launch_ros Node: a LifecycleNode action gives the launch process a DDS participant of its own, and
with it (and the large-message profile) the nodes' SIGINT shutdown overran launch's 5 s here; own
launch files that want OnStateTransition events can use LifecycleNode(..., namespace='').

Each node reads its own section (by node name) of `params_file`. Topic arguments remap the
default topic names of every node. Plain launch_ros, works on Humble and newer. Where
`ros2 launch` is missing, `sentryfuse run [--use-sim]` starts the same graph from the same YAML.
Every node starts with the Fast DDS profile for large messages (config/fastdds_large_messages.xml;
`dds_profile:=/other.xml` replaces it, `dds_profile:=''` leaves the environment's settings).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from sentryfuse_ros.core.runtime.params import LAUNCH_PERCEPTION, launch_arguments

PACKAGE = 'sentryfuse_ros'
# Fast DDS 3 (Kilted and newer) reads the first; Fast DDS 2 (these distributions) the second,
# which Kilted's rmw_fastrtps still reads, with a deprecation warning per node.
DDS_PROFILE_VARIABLES = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
FAST_DDS_2_DISTROS = ('humble', 'iron', 'jazzy')


def dds_profile_environment(context) -> list:
    """The Fast DDS profile variable(s) of this distribution set to dds_profile; none when it is ''."""
    path = LaunchConfiguration('dds_profile').perform(context)
    fast_dds_2 = os.environ.get('ROS_DISTRO') in FAST_DDS_2_DISTROS
    names = DDS_PROFILE_VARIABLES if fast_dds_2 else DDS_PROFILE_VARIABLES[:1]
    return [SetEnvironmentVariable(name, path) for name in names] if path else []


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    arg = LaunchConfiguration
    schema_args = launch_arguments()  # defaults and descriptions from the nodes' parameter schemas
    topics = {name: default for name, (default, _) in schema_args.items() if name.endswith('_topic')}
    arguments = [
        DeclareLaunchArgument('use_sim', default_value='false',
                              description='also start sensor_sim, the simulated robot'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='use /clock (bag replay, simulators)'),
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config', 'perception.yaml'),
                              description='ros__parameters YAML, one section per node name'),
        DeclareLaunchArgument('dds_profile', default_value=EnvironmentVariable(
            DDS_PROFILE_VARIABLES[0],
            default_value=os.path.join(share, 'config', 'fastdds_large_messages.xml')),
            description='Fast DDS XML profile of every node (default: $FASTDDS_DEFAULT_PROFILES_FILE, '
                        "else the shipped large-message profile; '' = set none)"),
    ] + [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, (default, description) in schema_args.items()]
    remappings = [(default, arg(name)) for name, default in topics.items()]
    use_sim_time = {'use_sim_time': ParameterValue(arg('use_sim_time'), value_type=bool)}
    budget = {'compute_budget_override': ParameterValue(arg('compute_budget_override'),
                                                        value_type=float)}
    autostart = {'autostart': ParameterValue(arg('autostart'), value_type=bool)}
    nodes = [
        Node(package=PACKAGE, executable='health_monitor', name='health_monitor',
             output='screen', remappings=remappings,
             parameters=[arg('params_file'), use_sim_time, budget]),
        Node(package=PACKAGE, executable='perception', name='perception',
             output='screen', remappings=remappings,
             parameters=[arg('params_file'), use_sim_time, autostart, {
                 name: ParameterValue(arg(name), value_type=str) for name in LAUNCH_PERCEPTION}]),
        Node(package=PACKAGE, executable='sensor_sim', name='sensor_sim',
             output='screen', remappings=remappings,
             parameters=[arg('params_file'), use_sim_time],
             condition=IfCondition(arg('use_sim'))),
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=dds_profile_environment)] + nodes)
