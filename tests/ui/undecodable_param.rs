#[derive(serde::Serialize)]
struct Job {
    size: u32,
}

struct Worker;

#[rodario::actor]
impl Worker {
    pub fn resize(&self, job: Job) -> u32 {
        job.size
    }
}

fn main() {}
