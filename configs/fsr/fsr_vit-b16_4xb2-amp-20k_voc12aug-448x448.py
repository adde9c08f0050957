# FSR as the paper config, trained with automatic mixed precision (bf16).
# Same as `tools/train.py <paper config> --amp` except for the dtype
# (`--amp` gives fp16). Needs a GPU with bf16 (Ampere or newer); on older
# GPUs (V100, T4) use dtype='float16', for which the dynamic loss scale
# matters. The precision-sensitive parts compute in fp32 whatever the autocast
# dtype: CAM normalisation, PAR, the DINO softmax with temperature and
# centering, the classification and segmentation cross-entropies (see
# docs/benchmark.md). Not supported on CPU by mmengine's AmpOptimWrapper;
# tools/analysis_tools/benchmark_train.py autocasts on CPU instead.
_base_ = ['./fsr_vit-b16_4xb2-20k_voc12aug-448x448.py']

optim_wrapper = dict(
    type='AmpOptimWrapper', dtype='bfloat16', loss_scale='dynamic')
