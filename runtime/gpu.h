// The CUDA backend of lsst-run (ARCHITECTURE §4.4): the model of model.h on this rank's GPU,
// bf16 mixed precision (kernels/cuda/kernels_cuda.h): fp32 master weights, gradients and AdamW
// moments, their bf16 copy for the GEMMs, bf16 activations, fp32 LayerNorm and softmax
// statistics and losses.
//
// The host Model keeps what the trainer needs on the host: parameters, gradients and moments
// (checkpoints, gradient averaging over MPI), tokens and positions; no activations.
// Device memory comes from one arena per kind (parameters+state, activations, scratch), so
// gpu_mem_bytes() = gpu_plan_bytes() exactly, plus the kernel module's workspace and scratch.
//
// Communication (gpu_comm.c): the LSS [K|V] all-gather and d[K|V] reduce-scatter (megatron-sp's
// 8 collectives) and the gradient sums, counted as comm.h counts. comm: mpi (and auto) goes
// through pinned host buffers and MPI, and several ranks may share one GPU; comm: nccl keeps
// everything on the device (NCCL communicators per group, one GPU per rank). [K|V] travels as
// bf16 (the bytes the attention reads); d[K|V] and gradients are summed in fp32.
// Schemes: lss, none (gpu.c) and megatron-sp (gpu_megatron.c).
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "comm.h"
#include "model.h"

typedef struct Gpu Gpu;

// Picks the GPU from the local rank (SLURM_LOCALID, OMPI_COMM_WORLD_LOCAL_RANK, else the
// rank among the processes of this node) modulo the visible devices, initializes the kernels
// and allocates the arenas for model m. Every rank calls it (it talks to the node's ranks).
// NULL with one line in err when there is no usable GPU, when with comm: nccl two ranks of the
// node would use one GPU, or when this lsst-run was built without CUDA.
// Then, once every rank has opened its GPU, gpu_comm_open (collective over comm): the host
// staging buffers (comm: mpi) or the NCCL communicators (comm: nccl).
Gpu *gpu_open(Model *m, Comm *comm, char *err, size_t errlen);
// 0 if the environment's kernel switches (LSST_LN, LSST_ATTN_BWD, ...: kernels/cuda/README.md)
// are unset or valid; else -1 and one line in err. No device needed (lsst-run checks them with
// the config, before --plan or any rank allocates).
int gpu_check_env(char *err, size_t errlen);
void gpu_comm_open(Gpu *g, Model *m, Comm *comm);
void gpu_close(Gpu *g);
// Device bytes gpu_open allocates for this model (lsst-run --plan with backend: cuda).
size_t gpu_plan_bytes(const Model *m);
size_t gpu_mem_bytes(const Gpu *g);
const char *gpu_device_name(const Gpu *g);   // "cuda:0 NVIDIA H200"
// The kernels this run uses, one line for the log: the attention variants for the model's head
// size and where the MLP's GELU runs (kernels/cuda/README.md).
void gpu_kernels_line(const Model *m, char *buf, size_t n);

// Host <-> device: parameters and AdamW moments (checkpoints, initialization); gradients
// (summed over MPI on the host with comm: mpi).
void gpu_state_to_device(Gpu *g, const Model *m);
void gpu_state_to_host(Gpu *g, Model *m);
void gpu_grads_to_host(Gpu *g, Model *m);
void gpu_grads_to_device(Gpu *g, const Model *m);
// comm: nccl: gradients [off, off + n) summed over a group in place on the device.
bool gpu_nccl(const Gpu *g);
// Device memory the NCCL communicators took (free memory before minus after creating them;
// 0 with comm: mpi). Not part of gpu_mem_bytes / mem_peak, which count lsst's own allocations.
size_t gpu_nccl_bytes(const Gpu *g);
void gpu_allreduce_grads(Gpu *g, Comm *comm, CommGroup grp, size_t off, size_t n);
// Waits for all the device work queued (the end of a step: its time includes the optimizer's
// kernels) and adds the device seconds of the NCCL collectives since the last call to comm's
// statistics (comm: mpi's collectives count themselves).
void gpu_sync(Gpu *g, Comm *comm);

// As model_forward / model_backward, on the device (tokens and targets from the host Model).
double gpu_forward(Gpu *g, Model *m, Comm *comm, float dloss);
void gpu_backward(Gpu *g, Model *m, Comm *comm);
// Sum of squares of the gradient of every tensor (NUM_PARAM_TENSORS doubles).
void gpu_grad_sum_squares(Gpu *g, const Model *m, double *out);
// AdamW on tensor i (offset `off` floats into the parameter block); refreshes its bf16 copy. The
// gradients enter multiplied by grad_scale (the clipping factor, 1: none) in the same pass.
void gpu_adamw(Gpu *g, size_t off, size_t n, float lr, float beta1, float beta2, float eps, float weight_decay, int t,
               float grad_scale);
