struct Greeter;

#[rodario::actor]
impl Greeter {
    pub fn greet(self) -> usize {
        0
    }
}

fn main() {}
