// Multiply-accumulates of one POSTER forward per image, from the model's shapes
// (convolutions, linears, attention products; norms and elementwise ops are not
// counted). The spec gives about 7.7 GMAC for the large model: IR-50 trunk
// about 5.5, transformer about 2.0, MobileFaceNet about 0.2. FLOPs = 2 * MACs.
#pragma once
#include "layers/poster.h"

typedef struct poster_macs {
    double ir50;            // trunk convolutions and ir_layer (trainable)
    double mobilefacenet;   // frozen landmark stream (0 with streams = image_only)
    double transformer;     // pyramid_fuse: linears, attention, token mix, up/downsampling
    double head;            // SE block and classifier
    double total;
} poster_macs;

// Per image at the network's 112x112 input (224 inputs are subsampled first).
void poster_count_macs(const poster_opts *o, poster_macs *out);
// FLOPs of one training forward+backward pass per image: backward costs twice
// the forward (input and weight gradients) for everything on the tape; the
// frozen stream runs forward only.
double poster_train_pass_flops(const poster_macs *m);
