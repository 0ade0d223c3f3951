struct Greeter;

#[rodario::actor]
impl Greeter {
    pub fn __methods__(&self) -> usize {
        0
    }
}

fn main() {}
