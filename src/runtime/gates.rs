//! The output gates of warm on-demand cameras, by camera: the gateway opens and closes them as viewers come and
//! go, and the supervisor hands a camera's gate to its thread when it starts. A camera without a gate pushes to
//! its output all the time.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::model::CameraId;
use crate::pipeline::gate::OutputGate;

/// Every warm camera's gate.
#[derive(Debug, Default)]
pub struct OutputGates(RwLock<HashMap<CameraId, Arc<OutputGate>>>);

impl OutputGates {
    /// Makes camera `id` warm (its output gated) with the gate `open` or closed, or sets its gate.
    pub fn set(&self, id: &CameraId, open: bool) {
        let mut gates = self.0.write().unwrap_or_else(|e| e.into_inner());
        let gate = gates.entry(id.clone()).or_insert_with(|| Arc::new(OutputGate::new(open)));
        if open { gate.open() } else { gate.close() }
    }

    /// Camera `id`'s gate, if it is warm.
    pub fn get(&self, id: &CameraId) -> Option<Arc<OutputGate>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// Camera `id` is not warm any more: its output runs whenever it runs.
    pub fn remove(&self, id: &CameraId) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}
