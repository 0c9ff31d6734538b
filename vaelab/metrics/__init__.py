"""How the three papers judge a generative model, each measure beside its equation (the book's eq-frechet, eq-gmm,
eq-iwae and eq-bpd; the Split-VAE paper's §4.1, the self-supervised VAE paper's §4.1).

    Frechet distance   d^2 = ||mu_1 - mu_2||^2 + tr(C_1 + C_2 - 2 (C_1 C_2)^{1/2}) between Gaussians fitted to
                       features of two image sets; with pytorch-fid's InceptionV3 features it is the FID
    ex-post GMM        a Gaussian mixture fitted to the posterior means, sampled in place of the prior
    inactive latents   variables j with Var_x[mu_j(x)] < 0.05, and the variance law Var(mu_j) + E[sigma_j^2] ~ 1
    likelihood         the ELBO and the importance-weighted bound, in bits per dimension
    adversary          a discriminator's patch accuracy on held-out images (1/2: it has learned nothing)
    structure          parameters as Keras counts them; the share of a map's spectral energy at high frequencies

One module per measure, and `protocol`, which applies them all to a trained model; everything is importable from
`vaelab.metrics` directly. Every function takes image tensors in [0,1] (N x C x H x W) or a decode callable, so it
measures a Split-VAE's x, x1, x2 or their mix as readily as a plain VAE's samples. Model passes run in eval mode
without gradients, in batches, on the model's (or feature extractor's) device.
"""
from .frechet import (FeatureStatistics, frechet_distance, frechet_distance_of_samples, FeatureExtractor,
                      feature_statistics, frechet_distance_between, reference_statistics, weights_digest)
from .inception import (FIDWeightsUnavailableError, fid_weights_path, InceptionFeatures, fid_inception)
from .classifier import (SmallClassifier, train_classifier, classifier_accuracy, ClassifierFeatures,
                         classifier_features)
from .latents import (model_device, encode, decode, paper_gmm_components, LatentGMM, fit_latent_gmm,
                      LatentStatistics, latent_statistics)
from .likelihood import (LogLikelihood, gaussian_log_likelihood, bernoulli_log_likelihood, LikelihoodBounds,
                         log_likelihood_bounds, bits_per_dim)
from .protocol import feature_extractor, generate, evaluate
from .adversary import patch_accuracy, adversary_accuracy
from .structure import keras_parameter_count, high_frequency_share
