#pragma once
// The per-group parameters every codec reconstructs from: x' = f(code) * scale + centre.

#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN

struct codec_parameters {
    float centre = 0.0f;  ///< mean, zero point or 0, depending on the codec
    float scale = 0.0f;   ///< step (uniform codecs) or standard deviation (normal codec)
};

/// The affine form shared by the uniform codecs, which lets backends run one
/// vectorized loop for all of them:
///   code  = clamp(rint((x - centre) / scale), lowest, highest) + bias   (scale > 0)
///   code  = bias                                                        (scale == 0: q = 0)
///   value = (code - bias) * scale + centre
struct affine_code {
    float centre = 0.0f;
    float scale = 0.0f;
    float lowest = 0.0f;
    float highest = 0.0f;
    float bias = 0.0f;
};

QAQ_NAMESPACE_END
