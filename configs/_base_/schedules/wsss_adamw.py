# AdamW, linear warm-up then cosine decay, 10x lr on the heads (CAM
# classifiers, decoder, projector; the aggregation blocks and the class-token
# query train at 1x with the backbone, as in the authors' code), no weight
# decay on norms, biases and tokens. Set `max_iters` / `warmup_iters` in the
# config that uses it and mirror them in `param_scheduler`.
optim_wrapper = dict(
    type='OptimWrapper',
    # keeps the no-decay rules on the heads' norms and biases
    constructor='WSSSOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999),
                   weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,  # 1-D params such as attention in_proj_bias
        custom_keys={
            'pos_embed': dict(decay_mult=0.0),
            'cls_token': dict(decay_mult=0.0),
            'mask_token': dict(decay_mult=0.0),
            'cam_head': dict(lr_mult=10.0),
            'decode_head': dict(lr_mult=10.0),
            'aggregation_head.projector': dict(lr_mult=10.0),
        }))
