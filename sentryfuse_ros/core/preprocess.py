"""Raw sensor arrays -> model input tensors.

Shapes:
    camera  (H, W, 3) uint8 RGB          -> (3, S, S) float32, S = image_size
    lidar   (N, 4) float32 x,y,z,i [m]    -> (3, G, G) float32 BEV grid, G = bev_size
    audio   (L,) float32 mono in [-1, 1]  -> (A,) float32 at audio_rate, A = audio_samples
"""
import dataclasses

from sentryfuse_ros.core.config import check

MODALITIES = ('camera', 'lidar', 'audio')  # canonical order everywhere


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    image_size: int = 32           # camera images are resized to (image_size, image_size)
    bev_size: int = 32             # lidar BEV grid cells per side
    bev_range_m: float = 16.0      # BEV covers x, y in [-range, range] metres around the sensor
    bev_z_range_m: tuple = (-2.0, 4.0)  # z window [m] kept for the BEV grid
    audio_rate: int = 8000         # model audio sample rate [Hz]
    audio_samples: int = 8000      # samples per inference window (1 s at 8 kHz)

    def __post_init__(self):
        check(isinstance(self.image_size, int) and self.image_size >= 8, 'image_size', self.image_size, 'an int >= 8')
        check(isinstance(self.bev_size, int) and self.bev_size >= 8, 'bev_size', self.bev_size, 'an int >= 8')
        check(self.bev_range_m > 0, 'bev_range_m', self.bev_range_m, 'a positive distance in metres')
        check(len(self.bev_z_range_m) == 2 and self.bev_z_range_m[0] < self.bev_z_range_m[1],
              'bev_z_range_m', self.bev_z_range_m, '[z_min, z_max] with z_min < z_max')
        check(isinstance(self.audio_rate, int) and self.audio_rate > 0, 'audio_rate', self.audio_rate, 'a positive int [Hz]')
        check(isinstance(self.audio_samples, int) and self.audio_samples >= 256, 'audio_samples',
              self.audio_samples, 'an int >= 256')
