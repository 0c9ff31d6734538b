"""Building blocks, one module per network family:

    resnet      the Split-VAE network's pre-activation ResBlocks (Asperti et al., after Dai & Wipf)
    densenet    the self-supervised VAE's weight-normalised DenseNet blocks with channel attention
    resnet_v2   "How to train your VAE"'s ResNetV2 blocks and its PatchGAN discriminator
"""
from .resnet import PAPER_BN_MOMENTUM, ResBlock, ResFcBlock, downsample, scale_block, upsample
from .densenet import DenselyDecoder, DenselyEncoder, DenselyNetwork, DenseNetLayer, data_dependent_init
from .resnet_v2 import PatchGAN, ResBlockConvTV2, ResBlockConvV2, ResBlockIdV2, keras_init
