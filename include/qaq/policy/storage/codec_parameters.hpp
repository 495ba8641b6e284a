#pragma once
// The per-group parameters every codec reconstructs from: x' = f(code) * scale + centre.

#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN

struct codec_parameters {
    float centre = 0.0f;  ///< mean, zero point or 0, depending on the codec
    float scale = 0.0f;   ///< step (uniform codecs) or standard deviation (normal codec)
};

QAQ_NAMESPACE_END
