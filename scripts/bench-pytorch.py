#!/usr/bin/python3
"""The PyTorch side of `npm run bench`: the same ResNet50, data and steps.

ResNet50 as the course builds it (64x64x3 inputs, 6 classes, Conv ->
BatchNorm -> ReLU, biases on every convolution), batch 32, Adam at 1e-3 and
cross-entropy, float32, in PyTorch's own layout (NCHW) on its CPU kernels
(oneDNN underneath). It prints one line tagged BENCH_RESULT with the median,
mean, slowest and fastest images per second of inference and of training, in
the form scripts/bench.ts reads. Meant for Debian's python3-torch:

    /usr/bin/python3 scripts/bench-pytorch.py --threads 2 --steps 9

It is a yardstick, not part of the product: the issue that set the oneDNN
backend's targets quoted PyTorch on this machine, and measuring both in one
sitting removes the machine's drift from the comparison.
"""
import argparse
import json
import resource
import statistics
import sys
import time

BATCH = 32
WARMUP_STEPS = 2


def build(torch):
    nn = torch.nn

    def conv_bn(cin, cout, k, stride=1, same=False, relu=True):
        layers = [
            nn.Conv2d(cin, cout, k, stride=stride, padding=(k // 2 if same else 0), bias=True),
            # Keras' epsilon; PyTorch's momentum counts the other way round.
            nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
        ]
        if relu:
            layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    class Block(nn.Module):
        def __init__(self, cin, filters, stride, shortcut):
            super().__init__()
            f1, f2, f3 = filters
            self.main = nn.Sequential(
                conv_bn(cin, f1, 1, stride),
                conv_bn(f1, f2, 3, same=True),
                conv_bn(f2, f3, 1, relu=False),
            )
            self.shortcut = conv_bn(cin, f3, 1, stride, relu=False) if shortcut else None

        def forward(self, x):
            skip = x if self.shortcut is None else self.shortcut(x)
            return torch.relu(self.main(x) + skip)

    stages = [((64, 64, 256), 1, 3), ((128, 128, 512), 2, 4), ((256, 256, 1024), 2, 6),
              ((512, 512, 2048), 2, 3)]
    layers = [nn.ZeroPad2d(3), conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2)]
    cin = 64
    for filters, stride, blocks in stages:
        layers.append(Block(cin, filters, stride, True))
        for _ in range(blocks - 1):
            layers.append(Block(filters[2], filters, 1, False))
        cin = filters[2]
    layers += [nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2048, 6)]
    return nn.Sequential(*layers)


def rate(seconds):
    ordered = sorted(seconds)
    return {
        'median': BATCH / statistics.median(ordered),
        'mean': BATCH * len(seconds) / sum(seconds),
        'slowest': BATCH / ordered[-1],
        'fastest': BATCH / ordered[0],
    }


def timed(step, steps):
    for _ in range(WARMUP_STEPS):
        step()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return rate(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--steps', type=int, default=9)
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print('BENCH_RESULT ' + json.dumps({'skipped': 'PyTorch is not installed '
                                            '(apt-get install python3-torch)'}))
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(torch)
    params = sum(p.numel() for p in model.parameters())
    x = torch.rand(BATCH, 3, 64, 64)
    y = torch.randint(0, 6, (BATCH,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def infer():
        model.eval()
        with torch.no_grad():
            model(x).sum().item()

    def train():
        model.train()
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        loss.item()

    inference = timed(infer, args.steps)
    training = timed(train, args.steps)
    print('BENCH_RESULT ' + json.dumps({
        'detail': f'PyTorch {torch.__version__}, {torch.get_num_threads()} '
                  f'thread{"" if torch.get_num_threads() == 1 else "s"}, {params} parameters',
        'inferenceBatch': BATCH, 'inference': inference, 'training': training,
        'steps': args.steps, 'warmup': WARMUP_STEPS,
        'peakRssMiB': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == '__main__':
    sys.exit(main())
