#!/usr/bin/python3
"""Makes a training golden case in the silo_cnn_train format (../shared/golden/silo_cnn_train) for another
batch size, latent channel count and latent size, so `silo check` runs a second, differently shaped case.

The model is our own torch transcription of SILO's DegradationModel (LayerNorm variant, sigma-conditioned;
the same structure the shared case, computed with SILO's own module, validates): its gradients and Adam
steps come from torch's autograd and torch.optim.Adam, in float64, independent of the engine under test.
Run with Debian's python3-torch (apt-get install python3-torch): /usr/bin/python3 tools/train-case/make_case.py test/fixtures/silo_cnn_train_b3c6
"""
import json, sys, os
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

B, C, HW, EMB, HIDDEN, STEPS, LR = 3, 6, 8, 24, 32, 3, 1e-3
SEED_W, SEED_Z, SEED_T, SEED_E = 20261207, 20261208, 20261209, 20261210
# The two largest weights (60 % of the parameters) are left out of after_k to keep the case under 2 MB;
# their gradients are stored, and every later loss depends on their updates.
OMIT_AFTER = ('encoder.9.weight', 'decoder.0.weight')


class DegradationModel(nn.Module):
    def __init__(self, c, hw, emb, hidden):
        super().__init__()
        self.hw = hw
        self.sigma_condition_precondition = nn.Sequential(nn.Linear(emb, hidden), nn.LeakyReLU(), nn.Linear(hidden, hw * hw))
        enc = [c + 1, 17, 33, 65, 128]
        layers = []
        for i in range(4):
            layers += [nn.Conv2d(enc[i], enc[i + 1], 3, padding=1), nn.LayerNorm([enc[i + 1], hw, hw]), nn.ReLU()]
        self.encoder = nn.Sequential(*layers)
        dec = [128, 64, 32, 16]
        layers = []
        for i in range(3):
            layers += [nn.ConvTranspose2d(dec[i], dec[i + 1], 3, stride=1, padding=1), nn.LayerNorm([dec[i + 1], hw, hw]), nn.ReLU()]
        self.decoder = nn.Sequential(*layers)
        self.adjust_encoding = nn.Sequential(nn.Conv2d(129, 16, 1), nn.LayerNorm([16, hw, hw]), nn.ReLU())
        self.processing = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.LayerNorm([16, hw, hw]), nn.ReLU(), nn.Conv2d(16, c, 3, padding=1))

    def forward(self, z, sigma_emb):
        m = self.sigma_condition_precondition(sigma_emb).view(-1, 1, self.hw, self.hw)
        e = self.encoder(torch.cat([z, m], 1))
        d = self.decoder(e)
        a = self.adjust_encoding(torch.cat([e, m], 1))
        return self.processing(d + a)


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(SEED_W)
    model = DegradationModel(C, HW, EMB, HIDDEN)
    g = torch.Generator().manual_seed(SEED_W + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 3:  # LayerNorm([C, h, w]) affine
                p.copy_((1 if name.endswith('weight') else 0) + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith('weight'):
                fan_in = p.shape[1] * (p[0, 0].numel() if p.dim() == 4 else 1)
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    weights = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    z = torch.randn((B, C, HW, HW), generator=torch.Generator().manual_seed(SEED_Z)).float()
    target = (1.6 * torch.randn((B, C, HW, HW), generator=torch.Generator().manual_seed(SEED_T))).float()
    row = torch.randn((1, EMB), generator=torch.Generator().manual_seed(SEED_E)).float()
    emb = row.expand(B, EMB).contiguous()

    model = model.double()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    golden = {'input.z': z, 'input.target': target, 'input.sigma_emb': emb}
    zz, tt, ee = z.double(), target.double(), emb.double()
    for k in range(STEPS + 1):
        y = model(zz, ee)
        loss = F.l1_loss(y, tt.clamp(-4, 4))
        if k == 0:
            golden['output'] = y.detach()
            golden['loss'] = loss.detach()
        else:
            golden[f'loss_{k}'] = loss.detach()
        if k == STEPS:
            break
        opt.zero_grad()
        loss.backward()
        if k == 0:
            for n, p in model.named_parameters():
                golden[f'grad.{n}'] = p.grad.detach().clone()
        opt.step()
        if k + 1 in (1, STEPS):
            for n, p in model.named_parameters():
                if n not in OMIT_AFTER:
                    golden[f'after_{k + 1}.{n}'] = p.detach().clone()

    from safetensors_write import write
    write(os.path.join(out, 'weights.safetensors'), {n: v.numpy() for n, v in weights.items()})
    write(os.path.join(out, 'golden.safetensors'), {n: v.float().reshape(v.shape).numpy() for n, v in golden.items()})
    names = [n for n, _ in model.named_parameters()]
    manifest = {
        'case': 'silo_cnn_train',
        'variant': f'b{B}c{C}s{HW}',
        'files': {'weights': 'weights.safetensors', 'golden': 'golden.safetensors'},
        'what': f'{STEPS} training steps of a DegradationModel({C}, layer_norm=True, sigma_condition=True) at a {HW}x{HW} latent with a {EMB}-wide sigma embedding, batch {B}: loss = F.l1_loss(output, target.clamp(-4, 4)), torch.optim.Adam(lr={LR}); as ../shared/golden/silo_cnn_train, made by tools/train-case/make_case.py',
        'reference': {'library': 'torch autograd and torch.optim.Adam on our torch transcription of SILO DegradationModel (tools/train-case/make_case.py)'},
        'versions': {'torch': torch.__version__, 'numpy': np.__version__},
        'computed_in': 'float64 from the stored float32 weights and inputs, rounded to float32',
        'weights_init': 'LayerNorm affines 1 + 0.1 N / 0.1 N, weights N(0, 1/fan_in), biases 0.05 N',
        'seeds': {'constructor_manual_seed': SEED_W, 'weights': SEED_W + 1, 'input.z': SEED_Z, 'input.target': SEED_T, 'input.sigma_emb_row': SEED_E},
        'inputs': {'input.z': 'N(0, 1)', 'input.target': '1.6 N(0, 1), clamped in the loss', 'input.sigma_emb': 'one N(0, 1) row repeated over the batch'},
        'latent_channels': {'here': C},
        'after_k_rule': f'after_k.<param> = the parameters after k Adam steps (k = 1, 3), complete, for every parameter except {", ".join(OMIT_AFTER)} (size; their grad.* are stored and the losses follow their updates)',
        'training': {
            'adam': {'lr': LR, 'betas': [0.9, 0.999], 'eps': 1e-08, 'weight_decay': 0, 'amsgrad': False, 'maximize': False},
            'loss': 'F.l1_loss(output, target.clamp(-4, 4))',
        },
        'trainable_parameters': {'names': names},
        'suggested_tolerance': {
            'output': {'atol': 1e-4, 'rtol': 1e-3},
            'loss': {'atol': 1e-6, 'rtol': 1e-5},
            'grad.*': {'rel_l2': 0.01, 'atol_relative_to_max_abs': 0.001, 'max_fraction_over_atol': 0.05},
            'after_1.*': {'atol': 1e-5, 'rtol': 0, 'max_fraction_over_atol': 0.01, 'update_rel_l2': 0.02},
            'after_3.*': {'atol': 1e-5, 'rtol': 0, 'max_fraction_over_atol': 0.01, 'update_rel_l2': 0.02},
        },
        'tensors': {n: {'shape': list(v.shape), 'dtype': 'float32'} for n, v in golden.items()},
    }
    with open(os.path.join(out, 'manifest.json'), 'w') as f:
        json.dump(manifest, f, indent=1)
    print(f'{out}: {len(golden)} golden tensors, {sum(v.numel() for v in weights.values())} weights; loss {golden["loss"].item():.6f} -> {golden[f"loss_{STEPS}"].item():.6f}')


if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(__file__))
    main(sys.argv[1] if len(sys.argv) > 1 else 'test/fixtures/silo_cnn_train_b3c6')
